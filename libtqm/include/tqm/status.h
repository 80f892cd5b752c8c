// Error-propagation helpers over absl::Status used throughout libtqm.
//
// TQM_RETURN_IF_ERROR(expr) returns the status of `expr` when it is not OK.
// TQM_ASSIGN_OR_RETURN(lhs, expr) evaluates an absl::StatusOr `expr`, returns
// its status on error and otherwise move-assigns the value to `lhs`.

#ifndef TQM_STATUS_H_
#define TQM_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TQM_RETURN_IF_ERROR(expr)                \
  do {                                           \
    ::absl::Status tqm_status_ = (expr);         \
    if (!tqm_status_.ok()) return tqm_status_;   \
  } while (0)

#define TQM_CONCAT_INNER_(a, b) a##b
#define TQM_CONCAT_(a, b) TQM_CONCAT_INNER_(a, b)

#define TQM_ASSIGN_OR_RETURN(lhs, expr) \
  TQM_ASSIGN_OR_RETURN_IMPL_(TQM_CONCAT_(tqm_statusor_, __LINE__), lhs, expr)

#define TQM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  if (!statusor.ok()) return statusor.status();         \
  lhs = std::move(statusor).value()

#endif  // TQM_STATUS_H_
