"""Save a pruned model, then load it back in a fresh process, bit for bit.

Run: python examples/save_load.py

The first process prunes LeNet-5, saves the result with ``fxprune.save`` (one
file of JSON and tensors) and the pruned program for deployment with
``torch.export.save``, then starts a second Python process that rebuilds the
model, loads both files and checks that everything is identical.  Loading
executes no code from the files: a file someone altered is refused.
"""
import os
import subprocess
import sys
import tempfile

import torch

import fxprune
from fxprune.testing import zoo


def build():
    """The model to prune: its architecture and (here seeded, normally trained) weights."""
    model, example_inputs = zoo.lenet5()  # seeded: the same weights in every process
    return model.eval(), example_inputs


def save(directory: str) -> None:
    model, x = build()
    result = fxprune.prune(model, x, ratio=0.5)
    path = fxprune.save(result, os.path.join(directory, "lenet_pruned.fxp"))
    # for deployment: the pruned program itself, loadable without fxprune
    program = torch.export.export(result.graph_module, x)
    torch.export.save(program, os.path.join(directory, "lenet_pruned.pt2"))
    with torch.no_grad():
        reference = {"output": result.graph_module(*x), **result.graph_module.state_dict()}
    torch.save(reference, os.path.join(directory, "reference.pt"))
    print(f"saved {path} ({os.path.getsize(path):,} bytes): {result.report.params_before:,} -> "
          f"{result.report.params_after:,} parameters")


def load(directory: str) -> None:
    model, x = build()
    result = fxprune.load(os.path.join(directory, "lenet_pruned.fxp"), model)
    reference = torch.load(os.path.join(directory, "reference.pt"), weights_only=True)
    with torch.no_grad():
        output = result.graph_module(*x)
    state = result.graph_module.state_dict()
    assert torch.equal(output, reference.pop("output")), "outputs differ"
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
    print(f"loaded in a fresh process: identical outputs and {len(state)} identical tensors")

    # a model of the same architecture with other weights (say, freshly initialised) is refused by default;
    # check_weights=False accepts it, and the pruned weights still come from the file
    other, _ = build()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    try:
        fxprune.load(os.path.join(directory, "lenet_pruned.fxp"), other)
        raise AssertionError("a model with other weights was accepted")
    except fxprune.ConfigError as exc:
        print(f"refused: {str(exc)[:100]}...")
    again = fxprune.load(os.path.join(directory, "lenet_pruned.fxp"), other, check_weights=False)
    with torch.no_grad():
        assert torch.equal(again.graph_module(*x), output)

    program = torch.export.load(os.path.join(directory, "lenet_pruned.pt2")).module()
    with torch.no_grad():
        assert torch.equal(program(*x), output), "the exported program differs"
    print("the torch.export program gives the same outputs")


def in_a_fresh_process(directory: str) -> None:
    """Run :func:`load` in a new Python process (with this process's fxprune)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(fxprune.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    run = subprocess.run([sys.executable, os.path.abspath(__file__), "--load", directory], env=env,
                         capture_output=True, text=True)
    print(run.stdout, end="")
    if run.returncode != 0:
        raise RuntimeError(f"loading in a fresh process failed:\n{run.stderr}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--load":
        load(sys.argv[2])
    else:
        with tempfile.TemporaryDirectory() as directory:
            save(directory)
            in_a_fresh_process(directory)
