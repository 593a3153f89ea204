#!/usr/bin/env bash
# The GPU check of the CUDA backend, in two halves, because the lent GPU machine has no
# network and none of palm's Debian libraries:
#
#   scripts/gpu-check.sh pack    here (Debian 12 + the CUDA toolkit, no GPU needed):
#       builds build-cuda (sm_80 + sm_90), makes a small data set, and bundles palm, the
#       CUDA test binaries and the shared libraries the GPU machine may lack into
#       .gpu/bundle.tar.xz (~20 MB; the carry limit is 64 MiB), with the data in .gpu/data
#       (git-ignored; name .gpu in the device tool's `carry`).
#   scripts/gpu-check.sh run     there, in the repository root (root, one GPU, CUDA 13):
#       the CUDA op and model tests, a 50-step training run on CUDA against the same run on
#       the CPU (fp32 and bf16), a bitwise resume on CUDA, 64 greedy tokens generated on
#       CUDA against the CPU's (fp32, bf16 and int8 weights), and the training bench with
#       its profile. Writes $OUT/report.md (the numbers for docs/PERFORMANCE.md) and the logs.
#       Budget: under 8 minutes on one H200. GPU_CHECK_BACKEND=cpu rehearses the script
#       itself on a machine without a GPU (the "cuda" runs then use the CPU backend).
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu

pack() {
  set -e
  make build-cuda >/dev/null
  cmake --build build-cuda --target test_kernels test_attention_decode test_backend_ops test_model test_device_comm >/dev/null
  rm -rf "$bundle" && mkdir -p "$bundle/bin" "$bundle/lib"
  trap 'rm -rf "$bundle/bin" "$bundle/lib"' EXIT
  cp build-cuda/palm build-cuda/tests/test_kernels build-cuda/tests/test_attention_decode build-cuda/tests/test_backend_ops \
    build-cuda/tests/test_model build-cuda/tests/test_device_comm \
    "$bundle/bin/"
  # every library the binaries load, except the C library, the C++ runtime (the GPU
  # machine's is newer; ours would shadow it for PyTorch) and cuBLAS (the machine's CUDA 13)
  for b in "$bundle"/bin/*; do ldd "$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|libcublas|libcublasLt|libnccl)\.so' |
    while read -r lib; do cp -L "$lib" "$bundle/lib/"; done
  strip --strip-unneeded "$bundle"/bin/* "$bundle"/lib/* 2>/dev/null || true
  # the data: the default corpus's first 2 MB, its own 8000-piece vocabulary
  build-cuda/palm data build --default --max-mb 2 --out "$bundle/data" >/dev/null
  tar -C "$bundle" -cf - bin lib | xz -T0 -6 >"$bundle/bundle.tar.xz"
  du -sh "$bundle/bundle.tar.xz" "$bundle/data"
}

run() {
  local out=${OUT:-/tmp/gpu-check} dev=${GPU_CHECK_BACKEND:-cuda}
  mkdir -p "$out"
  local report="$out/report.md" t_start=$SECONDS
  local unpacked=/tmp/palm-gpu data="$PWD/$bundle/data" work=/tmp/gpu-check-work
  local palm="$unpacked/bin/palm"
  rm -rf "$work" "$unpacked" && mkdir -p "$work" "$unpacked"
  xz -dc "$bundle/bundle.tar.xz" | tar -C "$unpacked" -xf - || { echo "no $bundle/bundle.tar.xz: run pack here and carry .gpu" >&2; exit 1; }
  # cuBLAS from the machine's toolkit, or from the PyTorch wheels' nvidia-cublas
  local cublas_dir
  cublas_dir=$(python3 -c 'import nvidia.cu13, os; print(os.path.join(os.path.dirname(nvidia.cu13.__file__), "lib"))' \
    2>/dev/null || python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' \
    2>/dev/null || true)
  # NCCL (218 MB: not carried) from the machine's toolkit or PyTorch's nvidia-nccl wheel
  local nccl_dir
  nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(os.path.dirname(nvidia.nccl.__file__), "lib"))' \
    2>/dev/null || true)
  export LD_LIBRARY_PATH="$unpacked/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${cublas_dir}:${nccl_dir}:${LD_LIBRARY_PATH:-}"
  export PALM_TORCH_PYTHON=$(command -v python3) PALM_SOURCE_DIR=$PWD
  say() { printf '%s\n' "$*" | tee -a "$report"; }
  : >"$report"
  say "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  say ""
  say '```'
  nvidia-smi -L 2>&1 | tee -a "$report"
  "$palm" info 2>&1 | tee -a "$report"
  say '```'

  say "## Tests on CUDA (every op against the double references; the model against PyTorch)"
  local t
  for t in test_kernels test_attention_decode test_backend_ops test_model test_device_comm; do
    timeout 180 "$unpacked/bin/$t" --gtest_filter='*cuda*' >"$out/$t.log" 2>&1
    say "- $t: exit $? -- $(grep -E '^\[  (PASSED|FAILED)  \]|tests? ran' "$out/$t.log" | tr '\n' ' ')"
    # the CUDA cases exist only where the device is usable: none ran is a failure, not a pass
    grep -q '^\[       OK \] .*/cuda' "$out/$t.log" || say "    FAILED: no CUDA case ran (is the device usable? palm info above)"
    grep -E '^\[  FAILED  \]' "$out/$t.log" | sed 's/^/    /' | tee -a "$report" >/dev/null
  done

  say "## 50 training steps: CUDA against the CPU (tiny preset, batch 8 x 128)"
  local common=(train --preset tiny --data "$data" --batch-size 8 --seq-len 128 --checkpoint-every 25 --eval-every 1000)
  timeout 120 "$palm" --backend cpu "${common[@]}" --steps 50 --out "$work/cpu" >"$out/train_cpu.log" 2>&1
  timeout 120 "$palm" --backend "$dev" "${common[@]}" --steps 50 --out "$work/cuda" >"$out/train_cuda.log" 2>&1
  timeout 120 "$palm" --backend "$dev" "${common[@]}" --steps 50 --bf16 --out "$work/cuda_bf16" \
    >"$out/train_cuda_bf16.log" 2>&1
  python3 - "$work" <<'PY' 2>&1 | tee -a "$report"
import json, sys
def losses(run):
    try:
        return {r["step"]: r["loss"] for r in map(json.loads, open(f"{sys.argv[1]}/{run}/metrics.jsonl"))
                if "loss" in r and "event" not in r}
    except OSError as e:
        return {}
cpu = losses("cpu")
for run in ("cuda", "cuda_bf16"):
    got = losses(run)
    steps = sorted(set(cpu) & set(got))
    if not steps:
        print(f"- {run}: no losses to compare (see {run} log)")
        continue
    worst = max(abs(got[s] - cpu[s]) / abs(cpu[s]) for s in steps)
    print(f"- {run} vs cpu fp32: {len(steps)} steps, max relative loss difference {worst:.2e}; "
          f"step {steps[-1]}: {got[steps[-1]]:.5f} vs {cpu[steps[-1]]:.5f}")
PY

  say "## The same 50 steps with the gradients through NCCL (one rank) and through MPI staged via the host"
  for t in nccl mpi; do
    PALM_COMM=$t timeout 120 "$palm" --backend "$dev" "${common[@]}" --steps 50 --out "$work/cuda_$t" >"$out/train_cuda_$t.log" 2>&1
    if cmp -s "$work/cuda/checkpoints/step-50/model.safetensors" "$work/cuda_$t/checkpoints/step-50/model.safetensors"; then
      say "- PALM_COMM=$t: step-50 weights identical to the plain CUDA run (cmp)"
    else
      say "- PALM_COMM=$t: step-50 weights DIFFER or missing (see train_cuda_$t.log)"
    fi
  done

  say "## Resume on CUDA is bitwise (50 straight vs 25 + resume)"
  timeout 120 "$palm" --backend "$dev" "${common[@]}" --steps 25 --out "$work/cuda_resume" >"$out/resume.log" 2>&1
  timeout 120 "$palm" --backend "$dev" train --resume "$work/cuda_resume" --steps 50 >>"$out/resume.log" 2>&1
  if cmp -s "$work/cuda/checkpoints/step-50/model.safetensors" "$work/cuda_resume/checkpoints/step-50/model.safetensors"; then
    say "- step-50 weights: identical (cmp)"
  else
    say "- step-50 weights: DIFFER or missing (see resume.log)"
  fi

  say "## Generation on CUDA (#17's first check): 64 greedy tokens against the CPU's"
  local w
  for w in fp32 bf16 int8; do
    timeout 60 "$palm" --backend cpu generate --model "$work/cpu" --prompt "The" --max-tokens 64 --weights "$w" --json \
      >"$work/gen_cpu_$w.json" 2>>"$out/generate.log"
    timeout 60 "$palm" --backend "$dev" generate --model "$work/cpu" --prompt "The" --max-tokens 64 --weights "$w" --json \
      >"$work/gen_cuda_$w.json" 2>>"$out/generate.log"
  done
  python3 - "$work" <<'PY' 2>&1 | tee -a "$report"
import json, sys
for w in ("fp32", "bf16", "int8"):
    try:
        a = json.load(open(f"{sys.argv[1]}/gen_cpu_{w}.json"))
        b = json.load(open(f"{sys.argv[1]}/gen_cuda_{w}.json"))
    except (OSError, ValueError) as e:
        print(f"- {w}: no result ({e}; see generate.log)")
        continue
    same = sum(1 for x, y in zip(a["tokens"], b["tokens"]) if x == y)
    first = next((i for i, (x, y) in enumerate(zip(a["tokens"], b["tokens"])) if x != y), None)
    n = min(len(a["logprobs"]), len(b["logprobs"]), first if first is not None else 10**9)
    dl = max((abs(x - y) for x, y in zip(a["logprobs"][:n], b["logprobs"][:n])), default=0.0)
    print(f"- {w}: {same}/{len(a['tokens'])} tokens equal (first difference at {first}); "
          f"max |logprob difference| before it {dl:.2e}")
PY

  say "## Training bench (bench-1b: d 2048, 24 layers, 16 heads of 128, seq 2048)"
  local b
  for b in "--bf16 --batch-size 8" "--batch-size 4"; do
    say '```'
    # shellcheck disable=SC2086
    timeout 240 "$palm" --backend "$dev" bench train --preset bench-1b --seq-len 2048 --steps 3 $b --json \
      >"$out/bench.log" 2>&1
    tee -a "$report" <"$out/bench.log" >/dev/null
    say '```'
    [ $((SECONDS - t_start)) -lt 330 ] || { say "(time budget reached: the fp32 bench was not run)"; break; }
  done
  say '```'
  timeout 150 "$palm" --backend "$dev" bench train --preset bench-1b --seq-len 2048 --steps 2 --batch-size 4 --bf16 \
    --profile --no-reference >"$out/profile.log" 2>&1
  tee -a "$report" <"$out/profile.log" >/dev/null
  say '```'
  say "total: $((SECONDS - t_start)) s"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: scripts/gpu-check.sh pack|run (see the comment at the top)" >&2; exit 2 ;;
esac
