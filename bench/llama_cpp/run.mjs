// llama.cpp on a GGUF file, timed as palm times itself (palm bench generate
// --compare-llama-cpp runs this): prompt processing of PROMPT tokens in one batch, then
// DECODE greedy tokens one at a time (batch 1), THREADS threads, CPU only, token ids fed
// directly (the vocabulary is placeholders). Prints one JSON line.
//   node run.mjs MODEL.gguf THREADS PROMPT DECODE
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [modelPath, threadsArg, promptArg, decodeArg] = process.argv.slice(2);
if (!decodeArg) {
  console.error("usage: node run.mjs MODEL.gguf THREADS PROMPT DECODE");
  process.exit(2);
}
const threads = Number(threadsArg), prompt = Number(promptArg), decode = Number(decodeArg);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: threads });
const t0 = performance.now();
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const loadSeconds = (performance.now() - t0) / 1000;
const context = await model.createContext({ contextSize: prompt + decode + 64, batchSize: prompt, threads: { ideal: threads, min: threads }, sequences: 1 });
const sequence = context.getSequence();
const n_vocab = Number(model.fileInfo.metadata.llama.vocab_size);
let seed = 7;
const ids = Array.from({ length: prompt }, () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return 3 + 256 + (seed % (n_vocab - 259));  // ordinary pieces, never a control token
});
// warm-up (the first evaluation sets up buffers), then the timed runs
await sequence.evaluateWithoutGeneratingNewTokens(ids.slice(0, 16));
await sequence.clearHistory();
let t = performance.now();
await sequence.evaluateWithoutGeneratingNewTokens(ids);
const ppSeconds = (performance.now() - t) / 1000;
let generated = 0;
t = performance.now();
for await (const token of sequence.evaluate([ids[ids.length - 1]], { temperature: 0 })) {
  if (++generated >= decode) break;
}
const tgSeconds = (performance.now() - t) / 1000;
const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules/node-llama-cpp/package.json"), "utf8"));
console.log(JSON.stringify({
  engine: `llama.cpp ${llama.llamaCppRelease?.release ?? "?"} via node-llama-cpp ${pkg.version} (prebuilt linux-x64, CPU)`,
  threads, load_seconds: loadSeconds,
  prompt_tokens: prompt, prompt_tokens_per_s: prompt / ppSeconds,
  decode_tokens: generated, decode_tokens_per_s: generated / tgSeconds,
}));
await context.dispose();
await model.dispose();
