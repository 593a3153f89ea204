"""`import palm` against the palm CLI on one tiny trained model: the same ids, logprobs,
greedy and sampled tokens, eval numbers; weights as NumPy; training with a callback,
Ctrl-C and resume; bad input as palm.Error. Run by `make test` (CTest python_package)."""
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import palm

PALM = os.environ["PALM_BINARY"]
SOURCE = os.environ.get("PALM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
TEXT = os.path.join(SOURCE, "tests", "fixtures", "text", "english.txt")


def cli(*args, stdin=None):
    r = subprocess.run([PALM, *args], input=stdin, capture_output=True, text=True)
    assert r.returncode == 0, f"palm {' '.join(args)}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A tiny model trained by the CLI (tokenizer, data, 30 steps) for every test."""
    d = tmp_path_factory.mktemp("palm")
    corpus = d / "corpus.txt"
    with open(TEXT) as f, open(corpus, "w") as out:
        for line in f:
            out.write("%%\n" if not line.strip() else line)
    cli("tokenizer", "train", "--input", str(corpus), "--vocab-size", "600", "--out", str(d / "tok"))
    cli("data", "build", "--tokenizer", str(d / "tok"), "--source", f"text={corpus}:sep=%%", "--out", str(d / "data"))
    cli("train", "--preset", "tiny", "--data", str(d / "data"), "--out", str(d / "run"), "--steps", "30",
        "--batch-size", "4", "--seq-len", "128", "--checkpoint-every", "30", "--eval-every", "30")
    return d


@pytest.fixture(scope="session")
def model(run_dir):
    return palm.Model.load(str(run_dir / "run"), threads=2)


def test_tokenizer_equals_the_cli(run_dir):
    tok = palm.Tokenizer(str(run_dir / "tok"))
    text = "To be, or not to be: 1984 ünïcödé \U0001F600  spaces"
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    want = [int(x) for x in cli("tokenizer", "encode", "--tokenizer", str(run_dir / "tok"), "--text", text).split()]
    assert ids.tolist() == want
    assert tok.decode(ids) == text and tok.decode(list(ids)) == text  # lossless, from NumPy or a list
    assert tok.decode_bytes(ids) == text.encode()
    pieces = cli("tokenizer", "encode", "--tokenizer", str(run_dir / "tok"), "--text", text, "--pieces").split()
    assert [p for p in tok.pieces(text) if p.strip()] == pieces
    assert tok.vocab_size == 600 and len(tok) == 600
    assert (tok.pad_id, tok.eod_id, tok.unk_id) == (0, 1, 2)
    with pytest.raises(palm.Error, match="outside the vocabulary"):
        tok.decode([5, 600])
    with pytest.raises(palm.Error, match="integers"):
        tok.decode(np.array([1.0, 2.0]))


def test_model_facts(model):
    c = model.config
    assert (c["d_model"], c["n_layers"], c["n_heads"], c["head_dim"], c["vocab_size"]) == (64, 2, 4, 16, 600)
    info = json.loads(cli("info", "--config", _config_file(model), "--json"))
    assert model.num_parameters == info["parameters"]
    assert model.flops_per_token == pytest.approx(info["flops_per_token"], rel=1e-12)
    assert model.backend == "cpu"


def _config_file(model):
    path = os.path.join(os.path.dirname(model.path), "model_config.json")
    with open(path, "w") as f:
        json.dump(model.config, f)
    return path


def test_score_equals_palm_score(model):
    ids = model.tokenizer.encode("The quality of mercy is not strained")
    got = model.score(ids)
    want = json.loads(cli("score", "--model", os.path.dirname(model.path), "--tokens", " ".join(map(str, ids)),
                          "--json"))["logprobs"]
    assert got.dtype == np.float64 and got.shape == (len(ids) - 1,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_forward_logits_give_the_scores(model):
    ids = np.stack([model.tokenizer.encode("Friends, Romans, countrymen, lend me")[:8],
                    model.tokenizer.encode("Now is the winter of our discontent")[:8]]).astype(np.int64)
    logits = model.forward(ids)
    assert logits.shape == (2, 8, 600) and logits.dtype == np.float32
    for b in range(2):
        lse = np.log(np.exp(logits[b].astype(np.float64)).sum(-1))
        lp = logits[b, np.arange(7), ids[b, 1:]] - lse[:7]
        np.testing.assert_allclose(lp, model.score(ids[b]), atol=2e-5)
    assert model.forward(ids[0].astype(np.int32)).shape == (8, 600)


def test_greedy_and_sampled_generation_equal_palm_generate(model):
    run = os.path.dirname(model.path)
    for args, kw in [((), {}), (("--temperature", "0.8", "--top-p", "0.95", "--seed", "7"),
                                dict(temperature=0.8, top_p=0.95, seed=7))]:
        want = json.loads(cli("generate", "--model", run, "--prompt", "ROMEO:", "--max-tokens", "24", "--json", *args))
        assert model.generate("ROMEO:", max_tokens=24, **kw) == want["text"]
        streamed = list(model.generate("ROMEO:", max_tokens=24, stream=True, **kw))
        assert "".join(streamed) == want["text"] and len(streamed) >= 2
        assert model.generate_batch(["ROMEO:"], max_tokens=24, **kw)[0]["tokens"] == want["tokens"]


def test_generate_batch_equals_prompts_file(model, tmp_path):
    prompts = ["ROMEO:", "The king", "To be"]
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    want = [json.loads(l) for l in cli("generate", "--model", os.path.dirname(model.path), "--prompts-file", str(f),
                                       "--max-tokens", "16", "--json").splitlines()]
    got = model.generate_batch(prompts, max_tokens=16)
    for g, w in zip(got, want):
        assert (g["text"], g["tokens"], g["finish_reason"]) == (w["text"], w["tokens"], w["finish_reason"])
        np.testing.assert_allclose(g["logprobs"], w["logprobs"], atol=1e-9)
    stop = model.generate("ROMEO:", max_tokens=40, stop=["e"])
    assert "e" not in stop and model.generate("ROMEO:", max_tokens=40).startswith(stop)


def test_a_bf16_kv_cache_equals_palm_generate_with_one(model):
    run = os.path.dirname(model.path)
    want = json.loads(cli("generate", "--model", run, "--prompt", "ROMEO:", "--max-tokens", "24", "--kv-cache", "bf16",
                          "--json"))
    got = palm.Model.load(run, kv_cache="bf16").generate_batch(["ROMEO:"], max_tokens=24)[0]
    assert got["tokens"] == want["tokens"]
    np.testing.assert_allclose(got["logprobs"], want["logprobs"], atol=1e-9)
    # the first token comes from the prompt's forward, the rest read the rounded cache
    fp32 = model.generate_batch(["ROMEO:"], max_tokens=24)[0]
    assert got["logprobs"][0] == fp32["logprobs"][0] and got["logprobs"][1:] != fp32["logprobs"][1:]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32).reshape(v["shape"])
            for k, v in header.items()}


def test_weights_round_trip_through_numpy(run_dir):
    m = palm.Model.load(str(run_dir / "run"), threads=2)
    sd = m.state_dict()
    file = read_safetensors(m.path)
    assert set(sd) == set(file)
    for k in sd:
        np.testing.assert_array_equal(sd[k], file[k])
    ids = m.tokenizer.encode("a pound of flesh")
    before = m.score(ids)
    m.load_state_dict({k: v * 0.5 for k, v in sd.items()})
    assert not np.allclose(m.score(ids), before)
    m.load_state_dict(sd)
    np.testing.assert_array_equal(m.score(ids), before)
    with pytest.raises(palm.Error, match="float32"):
        m.load_state_dict({k: v.astype(np.float64) for k, v in sd.items()})
    with pytest.raises(palm.Error, match="shape"):
        m.load_state_dict({k: (v[:1] if v.ndim == 2 else v) for k, v in sd.items()})
    with pytest.raises(palm.Error, match="missing"):
        m.load_state_dict({k: v for k, v in list(sd.items())[1:]})


def test_eval_equals_palm_eval(model, tmp_path):
    mc = tmp_path / "mc.jsonl"
    mc.write_text('{"prompt": "To be or not", "choices": [" to be", " a fish", " 12"], "answer": 0}\n'
                  '{"prompt": "ROMEO:", "choices": [" O", " x"], "answer": 0}\n'
                  '{"prompt": "The king", "choices": [" is", " qq"], "answer": 1}\n')
    for task, data in [("mc", mc), ("perplexity", TEXT)]:
        want = json.loads(cli("eval", "--model", os.path.dirname(model.path), "--task", task, "--data", str(data),
                              "--limit", "3", "--json"))
        got = palm.eval(model=model, task=task, data=str(data), limit=3)
        for k in ("n", "accuracy", "accuracy_norm", "bits_per_byte", "tokens"):
            if k in want:
                assert got[k] == pytest.approx(want[k], rel=1e-12), k
    with pytest.raises(palm.Error):
        palm.eval(model=model, task="nonsense", data=str(mc))


def test_bad_input_is_palm_error_never_a_crash(model, run_dir):
    with pytest.raises(palm.Error, match="no such file"):
        palm.Model.load(str(run_dir / "nonexistent"))
    with pytest.raises(palm.Error):
        palm.Tokenizer(str(run_dir / "nonexistent"))
    with pytest.raises(palm.Error, match="integers"):
        model.forward(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(palm.Error, match="dimensions"):
        model.forward(np.zeros((2, 2, 2), dtype=np.int32))
    with pytest.raises(palm.Error, match="context holds"):
        model.forward(np.zeros((1, 10000), dtype=np.int32))
    with pytest.raises(palm.Error, match="outside the vocabulary"):
        model.forward(np.array([[1, 2, 600]]))
    with pytest.raises(palm.Error, match="outside the vocabulary"):
        model.score([1, -3, 4])
    with pytest.raises(palm.Error, match="not an integer"):
        model.score([1, "2", 3])
    with pytest.raises(palm.Error):
        model.score([1])  # one token: nothing to score
    with pytest.raises(palm.Error, match="temperature"):
        model.generate("x", temperature=-1)
    with pytest.raises(palm.Error, match="empty"):
        model.generate("")
    with pytest.raises(palm.Error, match="weight format"):
        palm.Model.load(os.path.dirname(model.path), weights="fp8")
    with pytest.raises(palm.Error, match="KV cache format"):
        palm.Model.load(os.path.dirname(model.path), kv_cache="fp16")
    with pytest.raises(palm.Error, match="backend"):
        palm.Model.load(os.path.dirname(model.path), backend="tpu")
    with pytest.raises(palm.Error, match="preset"):
        palm.train(data="d", out="o")


def test_compute_releases_the_gil(model):
    ids = np.tile(model.tokenizer.encode("Once more unto the breach, dear friends, once more")[:32], (16, 4))[:, :128]
    ticks, done = [0], threading.Event()

    def work():
        for _ in range(5):
            model.forward(ids)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks[0] += 1
        time.sleep(0.001)
    t.join()
    assert ticks[0] > 20, "the main thread did not run while the model computed"


TRAIN_SCRIPT = """
import json, sys, palm
steps = []
def on_step(m):
    steps.append(m)
    print(json.dumps(m), flush=True)
try:
    palm.train(preset="tiny", data=sys.argv[1], out=sys.argv[2], steps=100000, batch_size=4, seq_len=64,
               checkpoint_every=1000, eval_every=100000, threads=1, on_step=on_step)
except KeyboardInterrupt:
    print("INTERRUPTED", len(steps), flush=True)
    sys.exit(3)
"""


def test_training_callback_ctrl_c_and_resume(run_dir, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(run_dir / "data"), str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    while len(lines) < 5:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        lines.append(json.loads(line))
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    last = rest.strip().splitlines()[-1]
    assert last.startswith("INTERRUPTED")
    seen = int(last.split()[1])
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5] and seen >= 5
    assert all({"loss", "lr", "grad_norm", "tokens_per_s"} <= set(m) for m in lines)
    # stopped cleanly: the step in progress when Ctrl-C came (its callback may not have
    # run: the interrupt is raised at the callback's first line) was finished and checkpointed
    ckpts = os.listdir(out / "checkpoints")
    assert len(ckpts) == 1 and ckpts[0].startswith("step-"), ckpts
    at = int(ckpts[0][5:])
    assert at in (seen, seen + 1), (at, seen)
    calls = []
    done = palm.train(out=str(out), resume=True, steps=at + 3, on_step=calls.append, threads=1)
    assert done == at + 3 and [m["step"] for m in calls] == [at + 1, at + 2, at + 3]


SIGNALS_SCRIPT = """
import os, signal, sys, threading, time, numpy as np, palm
m = palm.Model.load(sys.argv[1], threads=2)
hits = [0]
signal.signal(signal.SIGUSR1, lambda *a: hits.__setitem__(0, hits[0] + 1))
stop = threading.Event()
def spam():
    while not stop.is_set():
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.0003)
t = threading.Thread(target=spam)
t.start()
ids = np.tile(np.arange(1, 129, dtype=np.int32), (8, 1))
start = time.time()
while time.time() - start < 3:
    m.forward(ids)
    m.score(list(range(1, 100)))
    m.generate("ROMEO: " * 20, max_tokens=8)
    "".join(m.generate("JULIET:", max_tokens=8, stream=True))
stop.set()
t.join()
print("hits", hits[0])
"""


def test_signal_handlers_run_while_palm_computes(run_dir):
    """Python's handlers (SIGINT's, or any the program installs) never run on a thread
    inside oneDNN's GEMM, whose JIT kernels point the stack pointer at the heap (oneDNN
    #4845): signals sent throughout forward, score and generate are handled, and the heap
    survives (without the deferral this aborted in glibc's free within seconds)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", SIGNALS_SCRIPT, str(run_dir / "run")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert int(r.stdout.split()[1]) > 100


def test_pip_installs_the_package_into_a_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-build-isolation", "--no-index",
                        os.path.join(SOURCE, "python")], capture_output=True, text=True,
                       env=dict(os.environ, PALM_BUILD_DIR=os.environ["PALM_BUILD_DIR"]))
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import palm, sys; print(palm.__file__); print(palm.Error)"],
                       capture_output=True, text=True, cwd=str(tmp_path), env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    assert str(venv) in r.stdout


def test_arrays_and_streams_outlive_their_model(run_dir):
    """forward's logits are palm's own buffer: they keep the model's backend alive (the
    interpreter's exit, freeing globals in its own order, crashed before the array held
    the model); a stream and the tokenizer keep it alive too."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    head = "import sys, numpy as np, palm\nm = palm.Model.load(sys.argv[1], threads=1)\n"
    for body, want in [("logits = m.forward(np.array([[1, 2, 3]]))\nprint(logits.shape)\n", "(1, 3, 600)"),
                       ("s = m.generate('ROMEO:', max_tokens=4, stream=True)\nt = m.tokenizer\ndel m\n"
                        "print(len(''.join(s)) > 0, t.vocab_size)\n", "True 600")]:
        r = subprocess.run([sys.executable, "-c", head + body, str(run_dir / "run")], capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
        assert r.stdout.strip() == want
