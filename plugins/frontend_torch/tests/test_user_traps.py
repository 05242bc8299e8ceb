"""What a new user trips over, each test doing what a user did: train-mode models, the model's output structure
and names, a typo in torch.compile's target, progress, advice that must work when followed, and noise."""

import copy
import dataclasses
import os
import pty
import subprocess
import sys
import textwrap
import warnings
from collections import namedtuple

import byteir_core
import pytest
import torch
from byteir_core.errors import FrontendError
from byteir_frontend_torch import dynamo
from torch import nn
from torch.export import Dim
from torch.utils import _pytree as pytree

import zoo

TOL = dict(rtol=1e-4, atol=1e-5)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1)


def _conv_bn():
    torch.manual_seed(0)
    m = ConvBN()
    m.bn.running_mean.uniform_(-0.5, 0.5)
    m.bn.running_var.uniform_(0.5, 2.0)
    return m, torch.randn(2, 3, 8, 8)


def _output_names(session):
    return [session.get_arg_name(o) for o in session.get_output_arg_offsets()]


# ---- 1. train-mode models: eval by default, training behaviour on request, buffer updates kept apart ----------


def test_a_train_mode_module_compiles_in_eval_mode_with_a_warning_naming_it():
    m, x = _conv_bn()
    m.train()
    with pytest.warns(UserWarning, match=r"ConvBN is in training mode; compiled in eval mode .*ConvBN\.bn "
                      r"\(BatchNorm2d\).*\.eval\(\).*'train'"):
        art = byteir_core.compile(m, (x,))
    assert m.training and m.bn.training, "the module's mode is restored"
    got = byteir_core.load(art.to_bytes())(x)
    with torch.no_grad():
        expected = copy.deepcopy(m).eval()(x)
    assert isinstance(got, torch.Tensor), "one tensor, not the BatchNorm statistics first"
    torch.testing.assert_close(got, expected, **TOL)
    assert len(art.summary()["outputs"]) == 1


def test_a_train_mode_module_that_computes_the_same_in_eval_mode_compiles_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        byteir_core.compile(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(0.0)), (torch.randn(2, 4),))


def test_train_option_compiles_batch_statistics_and_names_the_buffer_updates():
    m, x = _conv_bn()
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning
        art = byteir_core.compile(m, (x,), options={"train": True})
    assert not m.training, "the module's mode is restored"
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items()), "compiling updates no statistics"
    ref = copy.deepcopy(m).train()
    with torch.no_grad():
        expected = ref(x)  # batch statistics; updates ref.bn's running statistics
    session = byteir_core.load(art.to_bytes())
    got = session(x)
    assert isinstance(got, torch.Tensor), "buffer updates are not part of the result"
    torch.testing.assert_close(got, expected, **TOL)
    flat = dict(zip(_output_names(session), session.run(x)))
    assert {"update:bn.running_mean", "update:bn.running_var", "update:bn.num_batches_tracked"} <= set(flat)
    torch.testing.assert_close(flat["update:bn.running_mean"], ref.bn.running_mean, **TOL)
    torch.testing.assert_close(flat["update:bn.running_var"], ref.bn.running_var, **TOL)


def test_a_train_mode_pt2_keeps_user_outputs_and_names_its_buffer_updates(tmp_path):
    m, x = _conv_bn()
    prog = torch.export.export(m.train(), (x,))
    torch.export.save(prog, str(tmp_path / "bn.pt2"))
    session = byteir_core.load(byteir_core.compile(str(tmp_path / "bn.pt2")).to_bytes())
    ref = copy.deepcopy(m).train()
    with torch.no_grad():
        expected = ref(x)
    torch.testing.assert_close(session(x), expected, **TOL)
    flat = dict(zip(_output_names(session), session.run(x)))
    torch.testing.assert_close(flat["update:bn.running_mean"], ref.bn.running_mean, **TOL)


@dataclasses.dataclass
class Pair:
    logits: torch.Tensor
    probs: torch.Tensor


torch.export.register_dataclass(Pair, serialized_type_name="test_user_traps.Pair")

Halves = namedtuple("Halves", ["first", "second"])


class Heads(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.lin = kind, nn.Linear(6, 4)

    def forward(self, x, y):
        logits = self.lin(x) + y
        probs = logits.softmax(-1)
        if self.kind == "tensor":
            return logits
        if self.kind == "tuple":
            return logits, probs
        if self.kind == "dict":
            return {"logits": logits, "probs": probs}
        if self.kind == "dataclass":
            return Pair(logits=logits, probs=probs)
        if self.kind == "namedtuple":
            return Halves(logits, probs)
        return {"a": (logits, [probs, None]), "b": {"c": logits.sum()}}  # nested, with a None


@pytest.mark.parametrize("kind", ["tensor", "tuple", "dict", "dataclass", "namedtuple", "nested"])
def test_outputs_come_back_in_the_models_own_structure(kind):
    torch.manual_seed(0)
    m = Heads(kind).eval()
    args = (torch.randn(3, 6), torch.randn(3, 4))
    got = byteir_core.load(byteir_core.compile(m, args).to_bytes())(*args)
    with torch.no_grad():
        expected = m(*args)
    got_leaves, got_spec = pytree.tree_flatten(got)
    exp_leaves, exp_spec = pytree.tree_flatten(expected)
    assert type(got) is type(expected) and got_spec == exp_spec, (got, expected)
    for g, e in zip(got_leaves, exp_leaves):
        torch.testing.assert_close(g, e, **TOL)


# ---- 6. names: forward's parameters, dict keys -------------------------------------------------------------


def test_argument_names_and_dict_keys_name_the_artifacts_inputs_and_outputs():
    torch.manual_seed(0)
    m = Heads("dict").eval()
    x, y = torch.randn(3, 6), torch.randn(3, 4)
    art = byteir_core.compile(m, (x, y))
    summary = art.summary()
    assert [i["name"] for i in summary["inputs"]] == ["x", "y"]
    assert [o["name"] for o in summary["outputs"]] == ["logits", "probs"]
    session = byteir_core.load(art.to_bytes())
    assert _output_names(session) == ["logits", "probs"]
    got = session(y=y, x=x)
    with torch.no_grad():
        expected = m(x, y)
    assert list(got) == ["logits", "probs"]
    torch.testing.assert_close(got["probs"], expected["probs"], **TOL)


def test_nested_outputs_are_named_by_their_path():
    torch.manual_seed(0)
    art = byteir_core.compile(Heads("nested").eval(), (torch.randn(3, 6), torch.randn(3, 4)))
    assert [o["name"] for o in art.summary()["outputs"]] == ["a.0", "a.1.0", "b.c"]
    art = byteir_core.compile(Heads("tuple").eval(), (torch.randn(3, 6), torch.randn(3, 4)))
    assert [o["name"] for o in art.summary()["outputs"]] == ["output0", "output1"]


# ---- 4. advice that works when followed; random ops -----------------------------------------------------------


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 4)

    def forward(self, x, y):
        return self.lin(x) * y


def test_a_dynamic_pt2_compiles_when_the_errors_input_shape_advice_is_followed(tmp_path):
    torch.manual_seed(0)
    m = TwoInputs().eval()
    batch = Dim("batch")
    prog = torch.export.export(m, (torch.randn(2, 16), torch.randn(2, 4)),
                               dynamic_shapes={"x": {0: batch}, "y": {0: batch}})
    pt2 = tmp_path / "mdyn.pt2"
    torch.export.save(prog, str(pt2))
    cli = [sys.executable, "-m", "byteir_core.cli", "compile", str(pt2), "-o", str(tmp_path / "m.byre")]
    first = subprocess.run(cli, capture_output=True, text=True)
    assert first.returncode == 1 and "e.g. --input-shape 1x16,1x4 with your sizes" in first.stderr, first.stderr
    followed = subprocess.run(cli + ["--input-shape", "3x16,3x4"], capture_output=True, text=True)
    assert followed.returncode == 0, followed.stderr
    x, y = torch.randn(3, 16), torch.randn(3, 4)
    got = byteir_core.load(str(tmp_path / "m.byre"))(x, y)
    with torch.no_grad():
        torch.testing.assert_close(got, m(x, y), **TOL)
    # a shape the program cannot take is one clear error
    bad = subprocess.run(cli + ["--input-shape", "3x16,4x4"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr, bad.stderr


class Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.drop = nn.Linear(4, 4), nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.lin(x))


def test_dropout_in_a_train_mode_program_is_one_error_naming_it_and_the_fix():
    prog = torch.export.export(Dropped().train(), (torch.randn(2, 4),))
    with pytest.raises(FrontendError) as ei:
        byteir_core.compile(prog)
    msg = str(ei.value)
    assert "dropout" in msg and "drop (Dropout)" in msg and ".eval()" in msg, msg
    assert "test_user_traps.py" in msg, "the user's source line"
    with pytest.raises(FrontendError, match=r"(?s)dropout.*fix: compile without options=\{'train': True\}"):
        byteir_core.compile(Dropped(), (torch.randn(2, 4),), options={"train": True})


# ---- 2. torch.compile: a typo in the target is an error, not a silent eager run --------------------------------


def test_an_unknown_torch_compile_target_is_an_error_naming_the_valid_ones():
    model = zoo.MLP().eval()
    compiled = torch.compile(model, backend="byteir", options={"target": "gpu"})
    log = len(dynamo.compile_log)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        with pytest.raises(Exception, match=r"unknown target 'gpu' \(did you mean 'cuda'\?\); targets: .*cpu"):
            compiled(torch.randn(2, 16))
    assert not [w for w in caught if issubclass(w.category, dynamo.ByteirFallbackWarning)], "no eager fallback"
    assert len(dynamo.compile_log) == log


def test_an_unknown_torch_compile_option_lists_the_valid_ones():
    compiled = torch.compile(zoo.MLP().eval(), backend="byteir", options={"progres": False})
    with pytest.raises(Exception, match=r"unknown byteir option.*progres.*progress"), torch.no_grad():
        compiled(torch.randn(2, 16))


# ---- 3. progress for torch.compile's graph compiles --------------------------------------------------------------


def test_each_torch_compile_graph_compile_has_a_labelled_progress_line(monkeypatch):
    import byteir_core.progress

    calls = []
    real = byteir_core.progress.progress_for

    def recording(progress, label):
        calls.append((progress, label))
        return real(progress, label)

    monkeypatch.setattr(byteir_core.progress, "progress_for", recording)
    model = zoo.MLP().eval()
    with torch.no_grad():
        torch.compile(model, backend="byteir", options={"cache": False})(torch.randn(2, 16))
    labels = [label for _, label in calls if " graph (" in label]
    assert len(labels) == 1 and labels[0].startswith("byteir: compiling inference graph ("), calls
    assert labels[0].endswith(" ops)")
    calls.clear()
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend="byteir", options={"cache": False, "progress": False})(torch.randn(3, 16))
    assert calls and all(p is False for p, _ in calls), calls


def _stderr_on_a_terminal(code: str, env: dict) -> str:
    """Run ``code`` with stderr on a pseudo-terminal (where a progress line shows); what it wrote there."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", code], stderr=slave, stdout=subprocess.PIPE, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(timeout=600) == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


def test_progress_shows_on_a_terminal_and_option_progress_false_turns_it_off(tmp_path):
    code = textwrap.dedent("""
        import sys, torch
        import byteir_core.progress
        byteir_core.progress.DELAY_S = 0.0  # this small graph compiles in under the usual second
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()).eval()
        opts = {"cache": False, "progress": sys.argv[1] == "on"}
        if sys.argv[1] == "on":
            del opts["progress"]  # the default: shown on a terminal
        with torch.no_grad():
            torch.compile(m, backend="byteir", options=opts)(torch.ones(2, 8))
    """)
    env = {k: v for k, v in os.environ.items() if k != "BYTEIR_PROGRESS"}
    env["BYTEIR_CACHE_DIR"] = str(tmp_path / "cache")
    shown = _stderr_on_a_terminal(code.replace("sys.argv[1]", "'on'"), env)
    assert "byteir: compiling inference graph" in shown, shown[-2000:]
    off = _stderr_on_a_terminal(code.replace("sys.argv[1]", "'off'"), env)
    assert "byteir: compiling" not in off, off[-2000:]


# ---- 5. noise ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [os.urandom(300), b"hello, not a model\n"], ids=["random-bytes", "text"])
def test_a_file_that_is_not_a_pt2_archive_is_one_error_line(tmp_path, content):
    fake = tmp_path / "fake.pt2"
    fake.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "byteir_core.cli", "compile", str(fake)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "fake.pt2" in lines[0], r.stderr


def test_quieting_torch_is_scoped_to_our_calls(tmp_path):
    import logging

    fake = tmp_path / "fake.pt2"
    fake.write_bytes(b"not a zip")
    logger = logging.getLogger("torch.export")
    level, filters = logger.level, list(warnings.filters)
    with pytest.raises(FrontendError, match="fake.pt2: not a loadable torch.export program"):
        byteir_core.compile(str(fake))
    assert logger.level == level and warnings.filters == filters


def test_a_whole_model_compile_prints_no_torch_warnings():
    code = textwrap.dedent("""
        import torch, byteir_core
        m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
        art = byteir_core.compile(m, (torch.randn(2, 4),))
        assert byteir_core.load(art)(torch.randn(2, 4)).shape == (2, 4)
        lstm = torch.nn.LSTM(4, 4, batch_first=True).eval()  # torch.export warns about its own weight list
        byteir_core.compile(lstm, (torch.randn(1, 3, 4),))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "FutureWarning" not in r.stderr and "LeafSpec" not in r.stderr, r.stderr
