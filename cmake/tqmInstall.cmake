# Install rules, the CMake package (find_package(tqm CONFIG): tqm::tqm,
# tqm::tqm_static, tqm::tqm_c), tqm.pc for the C API, and CPack's .deb.
# Included from the root CMakeLists.txt when TQM_INSTALL is ON.
include(CMakePackageConfigHelpers)

set(TQM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tqm)

# Public headers: libtqm/include/tqm/*.h and the generated version.h.
install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/libtqm/include/tqm
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev FILES_MATCHING PATTERN "*.h")
install(FILES ${TQM_GENERATED_INCLUDE_DIR}/tqm/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tqm COMPONENT dev)

set(TQM_INSTALL_LIBS tqm tqm_shared)
if(TARGET tqm_c)
  list(APPEND TQM_INSTALL_LIBS tqm_c)
endif()
install(TARGETS ${TQM_INSTALL_LIBS} EXPORT tqmTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT lib
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT tqmTargets NAMESPACE tqm:: DESTINATION ${TQM_CMAKE_DIR} COMPONENT dev)

# The tools, each with libtqm linked in statically (they need no libtqm.so).
if(TQM_TOOL_TARGETS)
  install(TARGETS ${TQM_TOOL_TARGETS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
          COMPONENT tools)
endif()

configure_package_config_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/tqmConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/tqmConfig.cmake INSTALL_DESTINATION ${TQM_CMAKE_DIR})
# 0.x: only the same minor version is compatible (see TQM_SOVERSION).
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(TQM_COMPAT SameMinorVersion)
else()
  set(TQM_COMPAT SameMajorVersion)
endif()
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tqmConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${TQM_COMPAT})
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tqmConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/tqmConfigVersion.cmake
        DESTINATION ${TQM_CMAKE_DIR} COMPONENT dev)

# pkg-config for the C API: `pkg-config --cflags --libs tqm` -> -ltqm_c.
# Paths relative to ${pcfiledir} so the prefix can move (cpack, DESTDIR).
file(RELATIVE_PATH TQM_PC_TO_PREFIX
     /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" TQM_PC_TO_PREFIX "${TQM_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/tqm.pc.in
               ${CMAKE_CURRENT_BINARY_DIR}/tqm.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tqm.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# ---- CPack: `cpack -G DEB` in the build directory ----
set(CPACK_PACKAGE_NAME tqm)
set(CPACK_PACKAGE_VENDOR "tqm")
set(CPACK_PACKAGE_CONTACT "tqm maintainers <tqm@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "compressed, memory-mapped 8-bit model files: library, C API and tools")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL OFF)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
# The Debian (bookworm) runtime packages of libtqm's dependencies.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libabsl20220623, libzstd1, libxxhash0, libc6, libstdc++6, libgcc-s1")
# The headers need Abseil's, the CMake package finds Abseil's targets.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libabsl-dev")
include(CPack)
