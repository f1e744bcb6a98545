#!/usr/bin/env bash
# Viz's CUDA paths on a lent GPU, through the CLI as a user runs them: pretraining from scratch
# (bf16 autocast; the base and 1b sizes), then adapters on the pretrained 1b base: QLoRA (NF4 +
# paged AdamW 8-bit, gradient checkpointing) and LoRA on bf16 for comparison. Prints the figures
# and leaves them with the manifests and a memory trace in $OUT (bench/results/cuda/ holds a run).
#
# The device machine has no package registry: the wheels Viz needs beyond its image travel in
# .devwhl/ and the QASPER-train papers in .devdata/papers.tar.gz (both git-ignored), e.g.
#   device run: bash bench/cuda.sh        (carry: .devwhl .devdata)
set -uo pipefail
OUT="${OUT:-/tmp/viz-cuda}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
if [ -d .devwhl ] && [ -z "${VIZ_CUDA_LOCAL:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .devwhl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VIZ_HOME=/tmp/vizhome
export VIZ_DATABASE_URL="sqlite:////tmp/vizhome/viz.db"
rm -rf /tmp/vizhome /tmp/papers && mkdir -p /tmp/vizhome /tmp/papers
tar -xzf .devdata/papers.tar.gz -C /tmp/papers
viz() { python3 -m viz.cli "$@"; }
timed() { local t0=$SECONDS; echo "\$ viz $*"; viz "$@"; echo "== exit $? in $((SECONDS - t0)) s"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import viz.cli, viz.training.pretraining, transformers, peft, bitsandbytes" || exit 1
python3 -c "import torch, transformers, peft, bitsandbytes as b; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, \
'bitsandbytes', b.__version__)"
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 \
    > "$OUT/gpu-memory.csv" &
sampler=$!

viz db upgrade >/dev/null
viz account create ai2 --kind firm --display-name "Allen Institute for AI" >/dev/null
viz documents add /tmp/papers/*.txt --owner ai2 --licence CC-BY-4.0 --tag qasper \
    --attribution "Dasigi et al. 2021, QASPER v0.3 (AI2), CC BY 4.0" | tail -n 2

[ "${BASE_TOKENS:-1}" = 0 ] || timed models pretrain --name open-base --account ai2 --tag qasper --size "${SIZE_A:-base}" \
    --tokens "${BASE_TOKENS:-4000000}" --batch-size 16 --checkpoint-every 100000
timed models pretrain --name open-1b --account ai2 --tag qasper --size "${SIZE_B:-1b}" \
    --tokens "${ONEB_TOKENS:-2000000}" --batch-size 16 --checkpoint-every 100000
timed models verify open-1b
timed adapters train --name qlora-1b --account ai2 --tag qasper --base open-1b --method qlora \
    --optimizer paged_adamw_8bit --steps "${STEPS:-40}" --batch-size 8 --sequence-length "${SEQ:-512}" --eval-windows 16
timed adapters train --name lora-1b --account ai2 --tag qasper --base open-1b --method lora \
    --base-precision bf16 --optimizer adamw --steps "${STEPS:-40}" --batch-size 8 --sequence-length "${SEQ:-512}" \
    --eval-windows 16
kill "$sampler"

python3 - "$OUT" <<'PY'
import json, pathlib, shutil, sys
out, home = pathlib.Path(sys.argv[1]), pathlib.Path("/tmp/vizhome")
for name in ("open-base", "open-1b"):
    manifest = home / "models/pretrained" / name / "model/viz-manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        shutil.copy(manifest, out / f"{name}-manifest.json")
        f = m["metrics"]
        print(f"{name}: {m.get('parameters')} parameters, held-out perplexity "
              f"{f['held_out_perplexity_initial']} -> {f['held_out_perplexity']}, "
              f"{f['tokens_per_second']} tokens/s")
for name in ("qlora-1b", "lora-1b"):
    manifest = home / "adapters" / name / "viz-manifest.json"
    if manifest.exists():
        shutil.copy(manifest, out / f"{name}-manifest.json")
        m = json.loads(manifest.read_text())
        print(name, json.dumps({k: m.get(k) for k in ("run", "metrics")}, default=str)[:1500])
peak = max((int(line.split(",")[1].split()[0]) for line in open(out / "gpu-memory.csv")
            if "MiB" in line), default=0)
print(f"peak GPU memory used over the whole run: {peak} MiB")
PY
