"""palm: PaLM-family language models from Python, over palm's C++ core (in-process).

    import palm
    tok = palm.Tokenizer("RUN/tokenizer")
    m = palm.Model.load("RUN")                  # backend=, threads=, weights="fp32|bf16|int8"
    lp = m.score(tok.encode("some text"))       # NumPy log-probabilities, as `palm score`
    for chunk in m.generate("def main(", max_tokens=64, temperature=0.8, top_p=0.95, seed=1, stream=True):
        print(chunk, end="")
    palm.train(preset="small", data="D", out="RUN", steps=100, on_step=print)
    palm.eval(model=m, task="gsm8k", data="test.jsonl", limit=20)

Errors are palm.Error with palm's one-line message. Compute releases the GIL.
See docs/python.md.
"""
from ._palm import Error, Model, TextStream, Tokenizer, train
from . import _palm

__all__ = ["Error", "Model", "TextStream", "Tokenizer", "train", "eval"]


def eval(model=None, task="", data="", limit=0, shots=-1, cot=True, labels="", cot_prompts="", num_samples=1,
         temperature=-1.0, top_p=-1.0, seed=0, jobs=0, timeout=0.0, completions=""):
    """Run one task of the evaluation harness (as `palm eval --json`) and return its results dict.

    model: a palm.Model (None with completions=, a JSONL of {"task_id", "completion"} to score).
    task: mc, piqa, bbh, gsm8k, humaneval, mbpp or perplexity; data: the task's file.
    limit: the first N examples (0: all); the other arguments are palm eval's flags."""
    if model is not None and not isinstance(model, Model):
        raise Error(f"eval: model must be a palm.Model, got {type(model).__name__}")
    return _palm._eval(model, task, data, limit=limit, shots=shots, cot=cot, labels=labels, cot_prompts=cot_prompts,
                       num_samples=num_samples, temperature=temperature, top_p=top_p, seed=seed, jobs=jobs,
                       timeout=timeout, completions=completions)
