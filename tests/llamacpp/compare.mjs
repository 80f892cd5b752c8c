// Greedy generation of tqm's GGUF exports in llama.cpp (the CPU build shipped
// in node-llama-cpp) against tqm-run in decoded-f32 mode, prompt by prompt.
//
//   node compare.mjs --node-modules DIR --tqm-run BIN --tqm FILE --steps N
//                    --gguf NAME=FILE[:MAXGAP] ... --prompt TEXT ...
//
// llama.cpp follows tqm-run's tokens (follow() below). Without MAXGAP every
// greedy choice of llama.cpp must be tqm-run's token, which makes the texts
// identical; with it, llama.cpp may choose another token where that token's
// logit exceeds tqm-run's by at most MAXGAP (a near tie that a rounding of
// the weights or activations flips); tqm-run's token is then fed on. Every
// such position is printed with its gap. Exit status: 0 all checks hold, 1 a
// check failed, 2 usage error or llama.cpp could not be loaded.
//
// Conventions mirrored from tqm-run (examples/runtime): the prompt is encoded
// with BOS (id 1) and the SentencePiece dummy-prefix space; the text printed
// is every token after BOS (prompt included), the first one without its
// leading space; generation stops when the model produces BOS (llama2.c's
// story delimiter) or after N positions, prompt included (tqm-run --steps).
// llama.cpp's detokenize of a sequence without BOS strips the first token's
// leading space the same way, so the texts are comparable byte for byte.

import {createRequire} from "node:module";
import {execFileSync} from "node:child_process";
import path from "node:path";
import {pathToFileURL} from "node:url";

const kBos = 1;

function usage(msg) {
  process.stderr.write(`compare.mjs: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = {gguf: [], prompts: []};
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    const v = argv[i + 1];
    if (v === undefined) usage(`${a} needs a value`);
    ++i;
    if (a === "--node-modules") o.nodeModules = v;
    else if (a === "--tqm-run") o.tqmRun = v;
    else if (a === "--tqm") o.tqm = v;
    else if (a === "--steps") o.steps = Number(v);
    else if (a === "--prompt") o.prompts.push(v);
    else if (a === "--gguf") {
      const m = /^([^=]+)=(.+?)(?::([0-9.eE+-]+))?$/.exec(v);
      const gap = m && m[3] !== undefined ? Number(m[3]) : null;
      if (!m || (gap !== null && !(gap >= 0))) usage(`--gguf ${v}: expected NAME=FILE[:MAXGAP]`);
      o.gguf.push({name: m[1], file: m[2], maxGap: gap});
    } else {
      usage(`unknown argument ${a}`);
    }
  }
  if (!o.nodeModules || !o.tqmRun || !o.tqm) usage("--node-modules, --tqm-run and --tqm are required");
  if (!Number.isInteger(o.steps) || o.steps < 2) usage("--steps must be an integer >= 2");
  if (o.gguf.length === 0 || o.prompts.length === 0) usage("need at least one --gguf and one --prompt");
  return o;
}

// tqm-run's text for `steps` positions and the number of tokens it emitted
// (the prompt's after BOS included), greedy, decoded-f32.
function runTqm(o, prompt, steps) {
  const out = execFileSync(
      o.tqmRun,
      [o.tqm, "--prompt", prompt, "--mode", "decoded-f32", "--temperature", "0",
       "--steps", String(steps), "--threads", "1", "--json"],
      {encoding: "utf8"});
  const j = JSON.parse(out);
  return {text: j.text, tokens: j.tokens};
}

// One position: feeds `input` and returns llama.cpp's greedy choice with the
// softmax over the whole vocabulary (the greedy sampler leaves the logits as
// they are, so these are the model's own probabilities).
async function step(seq, input) {
  for await (const o of seq.evaluateWithMetadata(input, {probabilities: true},
                                                 {temperature: 0, yieldEogToken: true})) {
    return o;
  }
  throw new Error("llama.cpp produced no token");
}

// The text of every token after another token (with its leading space).
function pieces(model, vocabSize) {
  const anchor = model.tokenize("a");
  const base = model.detokenize(anchor);
  const out = [];
  for (let t = 0; t < vocabSize; ++t) {
    out.push(t === kBos ? null : model.detokenize([...anchor, t]).slice(base.length));
  }
  return out;
}

// Where tqm-run's text ends after `count` tokens (prompt included, BOS not):
// tqm-run run for that many positions, once per prompt and count.
function tqmEnd(o, e, count) {
  if (!e.ends.has(count)) e.ends.set(count, runTqm(o, e.prompt, count).text.length);
  return e.ends.get(count);
}

// Follows tqm-run's tokens with llama.cpp. tqm-run prints text, not ids, so
// its token at a position is one whose text continues its output. Where
// tokens of different lengths do (" n" and " not"), llama.cpp's choice is
// taken as tqm-run's when it is one of them unless `exact`; with `exact`,
// or where llama.cpp's choice is not one of them, tqm-run is run for one
// position more to see where its token ends. Among tokens with the same text
// (the byte <0x20> and the piece " ") the one llama.cpp finds most probable
// is tqm-run's. Where llama.cpp's greedy choice is not tqm-run's token,
// tqm-run's is fed instead and the divergence recorded with its logit gap
// ln p(llama.cpp's token) - ln p(tqm-run's token) (llama.cpp's softmax): a
// near tie that a different rounding can flip has a gap near 0. A position
// where no token continues tqm-run's text is a hard mismatch.
async function follow(model, piece, o, e, exact) {
  const promptIds = model.tokenize(e.prompt);
  const ids = [...promptIds];
  let have = model.detokenize(ids);
  const divergences = [];
  let hard = null;
  const ctx = await model.createContext({
    contextSize: o.steps + 8, threads: 1,
    // Keys and values cached in float32 as tqm-run does (llama.cpp's default
    // is f16) and attention without the flash kernel: what differs from
    // tqm-run is then only the export's weights and the matmul kernels.
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
    flashAttention: false,
  });
  try {
    const seq = ctx.getSequence();
    let input = [kBos, ...promptIds];
    // Positions 0..steps-1 hold BOS and the tokens after it, as tqm-run's.
    while (ids.length < o.steps) {
      const out = await step(seq, input);
      const p = out.probabilities;
      let tqmToken;
      if (ids.length === e.tokens) {
        tqmToken = kBos;  // tqm-run stopped: its model produced BOS here
      } else if (e.text.length === have.length) {
        tqmToken = undefined;  // llama.cpp's text is longer than tqm-run's
      } else {
        let cands = [];
        for (let t = 0; t < piece.length; ++t) {
          if (piece[t] && e.text.startsWith(piece[t], have.length)) cands.push(t);
        }
        const lengths = new Set(cands.map((t) => piece[t].length));
        if (lengths.size > 1 && (exact || !cands.includes(out.token))) {
          const end = tqmEnd(o, e, ids.length + 1);
          cands = cands.filter((t) => have.length + piece[t].length === end);
        }
        if (cands.includes(out.token)) {
          tqmToken = out.token;
        } else if (cands.length > 0) {
          tqmToken = cands.reduce((x, y) => ((p.get(y) ?? 0) > (p.get(x) ?? 0) ? y : x));
        }
      }
      if (tqmToken === undefined) {
        hard = {index: ids.length - promptIds.length, llama: out.token,
                where: `after ${JSON.stringify(have.slice(-30))} tqm-run has ` +
                       JSON.stringify(e.text.slice(have.length, have.length + 10))};
        break;
      }
      if (tqmToken !== out.token) {
        const show = (t) => (t === kBos ? "<BOS>" : JSON.stringify(piece[t]));
        divergences.push({
          index: ids.length - promptIds.length,
          gap: Math.log(p.get(out.token)) - Math.log(p.get(tqmToken) ?? 0),
          where: `after ${JSON.stringify(have.slice(-30))} llama.cpp ${show(out.token)}, ` +
                 `tqm-run ${show(tqmToken)}`,
        });
      }
      if (tqmToken === kBos) break;
      ids.push(tqmToken);
      have += piece[tqmToken];
      input = [tqmToken];
    }
  } finally {
    await ctx.dispose();
  }
  const text = model.detokenize(ids);
  return {
    promptIds, ids, divergences, hard, text,
    same: hard === null && text === e.text && have === e.text && ids.length === e.tokens,
  };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  // Resolved as a module beside the node_modules directory would resolve it.
  const require = createRequire(path.join(path.resolve(o.nodeModules), "..", "_"));
  let entry;
  try {
    entry = require.resolve("node-llama-cpp");
  } catch (e) {
    usage(`node-llama-cpp is not installed in ${o.nodeModules}: ${e.message}`);
  }
  const {getLlama, LlamaLogLevel} = await import(pathToFileURL(entry).href);
  // The prebuilt CPU binary only: never a GPU backend, never a download or a
  // build from source.
  const llama = await getLlama({
    gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true,
    progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 1,
  });
  console.log(`llama.cpp ${llama.llamaCppRelease.release} (${llama.buildType}, gpu: ${llama.gpu})`);

  const expected = o.prompts.map((p) => ({prompt: p, ends: new Map(), ...runTqm(o, p, o.steps)}));
  let failures = 0;
  for (const g of o.gguf) {
    const model = await llama.loadModel({modelPath: g.file, gpuLayers: 0});
    try {
      const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens;
      if (!Array.isArray(vocab)) throw new Error(`${g.file}: no tokenizer.ggml.tokens`);
      const piece = pieces(model, vocab.length);
      for (const e of expected) {
        // Taking llama.cpp's token for tqm-run's where both continue the text
        // is right when llama.cpp's own choices give tqm-run's text in as
        // many tokens; anything else is redone token by token.
        let r = await follow(model, piece, o, e, false);
        if (!r.same || r.divergences.length > 0) r = await follow(model, piece, o, e, true);
        const generated = r.ids.length - r.promptIds.length;
        const maxGap = Math.max(0, ...r.divergences.map((d) => d.gap));
        const ok = r.same && (r.divergences.length === 0 || (g.maxGap !== null && maxGap <= g.maxGap));
        let what;
        if (r.hard !== null) {
          what = `at generated token ${r.hard.index} no token continues tqm-run's text ` +
                 `(llama.cpp chose ${r.hard.llama}, ${r.hard.where})`;
        } else if (!r.same) {
          what = `texts differ (${r.ids.length} tokens against tqm-run's ${e.tokens})`;
        } else if (r.divergences.length === 0) {
          what = `all ${generated} generated tokens identical`;
        } else {
          what = `${generated} generated tokens, first ${r.divergences[0].index} identical; ` +
                 `llama.cpp chose another token at ${r.divergences.length} position(s), ` +
                 `logit gap@token ${r.divergences.map((d) => `${d.gap.toPrecision(3)}@${d.index}`).join(" ")}`;
        }
        const allowed = g.maxGap === null ? "no divergence allowed" : `gaps up to ${g.maxGap} allowed`;
        console.log(`${ok ? "ok  " : "FAIL"} ${g.name} ${JSON.stringify(e.prompt)}: ${what} (${allowed})`);
        if (!ok || process.env.TQM_LLAMACPP_VERBOSE) {
          console.log(`  tqm-run: ${JSON.stringify(e.text)}`);
          for (const d of r.divergences.filter((d) => !(d.gap <= (g.maxGap ?? -1))).slice(0, 5)) {
            console.log(`  generated token ${d.index}: ${d.where}, gap ${d.gap.toPrecision(3)}`);
          }
        }
        if (!ok) ++failures;
      }
    } finally {
      await model.dispose();
    }
  }
  await llama.dispose();
  if (failures > 0) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
}

main().catch((e) => {
  process.stderr.write(`compare.mjs: ${e.stack ?? e}\n`);
  process.exit(2);
});
