"""torch.compile(model, backend="byteir"): inference, training, fallback, options, cache, shapes."""

import copy
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from byteir_frontend_torch import dynamo

import zoo


def _new_compiles():
    start = len(dynamo.compile_log)
    return lambda: dynamo.compile_log[start:]


def test_inference_matches_eager_and_runs_on_cpu_kernels():
    torch.manual_seed(0)
    model = zoo.MLP().eval()
    x = torch.randn(4, 16)
    log = _new_compiles()
    compiled = torch.compile(model, backend="byteir")
    with torch.no_grad():
        got = compiled(x)
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)
    entries = log()
    assert [e["kind"] for e in entries] == ["inference"]
    ops = entries[0]["report"]["ops_per_backend"]
    assert "reference" not in ops and ("cpu" in ops or "cpu_blas" in ops)


def test_training_gradients_match_eager():
    torch.manual_seed(0)
    model = zoo.MLP()
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 16), torch.randn(8, 4)
    log = _new_compiles()
    compiled = torch.compile(model, backend="byteir")
    loss = torch.nn.functional.mse_loss(compiled(x), y)
    loss.backward()
    ref_loss = torch.nn.functional.mse_loss(ref(x), y)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert {e["kind"] for e in log()} == {"forward", "backward"}


class WithDigamma(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = torch.digamma(h + 1.0)  # torch-mlir cannot lower digamma
        return self.b(h)


def test_unsupported_op_runs_in_eager_with_one_warning_naming_it():
    torch.manual_seed(0)
    model = WithDigamma().eval()
    x = torch.randn(3, 8)
    log = _new_compiles()
    compiled = torch.compile(model, backend="byteir")
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        got = compiled(x)
    torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)
    ours = [w for w in caught if issubclass(w.category, dynamo.ByteirFallbackWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    msg = str(ours[0].message)
    assert "aten.digamma" in msg and "test_dynamo.py" in msg  # the op and its source line
    assert log(), "the supported pieces around digamma were compiled by byteir"


def test_strict_raises_with_the_same_list():
    model = WithDigamma().eval()
    compiled = torch.compile(model, backend="byteir", options={"strict": True})
    with pytest.raises(Exception) as ei, torch.no_grad():
        compiled(torch.randn(3, 8))
    assert "aten.digamma" in str(ei.value) and "strict=True" in str(ei.value)


def test_unknown_option_is_refused():
    compiled = torch.compile(zoo.MLP(), backend="byteir", options={"targte": "cpu"})
    with pytest.raises(Exception, match="unknown byteir option"):
        compiled(torch.randn(2, 16))


def test_torch_compile_mode_is_accepted_with_a_warning():
    model = zoo.MLP().eval()
    x = torch.randn(2, 16)
    with pytest.warns(UserWarning, match="byteir ignores torch.compile\\(mode='max-autotune'\\)"), torch.no_grad():
        got = torch.compile(model, backend="byteir", mode="max-autotune")(x)
    torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)


def test_new_shapes_compile_again_and_stay_correct():
    torch.manual_seed(0)
    model = zoo.MLP().eval()
    compiled = torch.compile(model, backend="byteir")
    log = _new_compiles()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", dynamo.ByteirFallbackWarning)  # specialized, not sent to eager
        for batch in (2, 3, 5, 3):
            x = torch.randn(batch, 16)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    # batch 2 static; then Dynamo makes the batch dynamic and byteir specializes per shape (3, 5; 3 reused)
    assert len(log()) == 3


def test_attention_forward_and_backward_go_through_flash_attn():
    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 48)

        def forward(self, x):
            q, k, v = self.proj(x).view(2, 6, 3, 2, 8).permute(2, 0, 3, 1, 4)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).sum(1)

    torch.manual_seed(0)
    model = Attn()
    ref = copy.deepcopy(model)
    x = torch.randn(2, 6, 16)
    log = _new_compiles()
    out = torch.compile(model, backend="byteir")(x)
    out.square().sum().backward()
    ref_out = ref(x)
    ref_out.square().sum().backward()
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.proj.weight.grad, ref.proj.weight.grad, rtol=1e-4, atol=1e-5)
    notes = " ".join(" ".join(e["report"].get("notes", [])) for e in log())
    assert "byteir.flash_attn_fwd" in notes and "byteir.flash_attn_bwd" in notes


def test_backend_is_found_through_the_entry_point_without_importing_us(tmp_path):
    code = textwrap.dedent("""
        import sys, torch
        assert "byteir_frontend_torch" not in sys.modules
        print("byteir" in torch._dynamo.list_backends())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_a_second_process_reuses_the_cached_artifact(tmp_path):
    code = textwrap.dedent("""
        import torch
        from byteir_frontend_torch import dynamo
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()).eval()
        with torch.no_grad():
            y = torch.compile(m, backend="byteir")(torch.ones(2, 8))
        assert torch.allclose(y, m(torch.ones(2, 8)), atol=1e-5)
        print([e["cached"] for e in dynamo.compile_log])
    """)
    env = {**os.environ, "BYTEIR_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == "[False]" and second.stdout.strip() == "[True]"
    ls = subprocess.run([sys.executable, "-m", "byteir_core.cli", "cache", "ls"], capture_output=True, text=True,
                        env=env)
    assert "1 artifact(s)" in ls.stdout and "inference graph" in ls.stdout
    clear = subprocess.run([sys.executable, "-m", "byteir_core.cli", "cache", "clear"], capture_output=True,
                           text=True, env=env)
    assert "removed 1" in clear.stdout
    assert not list((tmp_path / "cache").glob("*.byre"))


def test_cnn_with_batchnorm_trains_like_eager_including_running_statistics():
    torch.manual_seed(0)
    model = zoo.CNN()
    ref = copy.deepcopy(model)
    x = torch.randn(4, 3, 16, 16)
    log = _new_compiles()
    compiled = torch.compile(model, backend="byteir", options={"strict": True})
    for m, run in ((model, compiled), (ref, ref)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            loss = run(x).logsumexp(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        else:
            assert torch.equal(a, b), name  # num_batches_tracked
    assert {e["kind"] for e in log()} == {"forward", "backward"}


def test_an_error_that_names_no_op_is_traced_to_the_op():
    """torch-mlir reports only leftover constants for some ops; byteir finds the op by importing ops alone."""
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.cumprod(x, 1) + 1

    model = M()
    compiled = torch.compile(model, backend="byteir", options={"strict": True})
    with pytest.raises(dynamo.ByteirCompileError) as ei, torch.no_grad():
        compiled(torch.randn(3, 4))
    assert "aten.cumprod" in str(ei.value) and "test_dynamo.py" in str(ei.value)


BOOM_PLUGIN = '''
import os
import numpy as np
from byteir_core import hookimpl
from byteir_core.interfaces import Backend, CompiledCluster, Provider

MODE = os.environ["BOOM_MODE"]

class Boom(Backend):
    name, device, fallback = "boom", "cpu", ("cpu",)
    def claims(self, op):
        return 10 if op.name == "stablehlo.tanh" else None
    def compile(self, cluster):
        if MODE == "compile":
            raise RuntimeError("vendor compiler crashed")
        return CompiledCluster(callee="boom.tanh")

class BoomProvider(Provider):
    name, callees = "boom", ("boom.tanh",)
    def load(self, callee, kernel, attrs):
        if MODE == "load":
            raise OSError("libboom.so: cannot open shared object file")
        def run(inputs, outputs):
            if MODE == "run":
                raise ZeroDivisionError("the device fell over")
            np.tanh(inputs[0], out=outputs[0])
        return run

@hookimpl
def byteir_register_backends(register): register(Boom())

@hookimpl
def byteir_register_providers(register): register(BoomProvider())
'''

BOOM_SCRIPT = '''
import sys, warnings, torch
from byteir_frontend_torch import dynamo

class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
    def forward(self, x):
        return torch.tanh(self.lin(x)) * 2

torch.manual_seed(0)
m, x = M().eval(), torch.randn(3, 8)
strict = sys.argv[1] == "strict"
compiled = torch.compile(m, backend="byteir", options={"target": "boom", "strict": strict})
with warnings.catch_warnings(record=True) as caught, torch.no_grad():
    warnings.simplefilter("always")
    try:
        got = compiled(x)
    except Exception as e:
        print("RAISED", type(e).__name__, str(e).splitlines()[-1][:300])
        sys.exit(0)
    again = compiled(x)
ours = [str(w.message) for w in caught if issubclass(w.category, dynamo.ByteirFallbackWarning)]
assert torch.allclose(got, m(x)) and torch.allclose(again, m(x))
print("WARNINGS", len(ours), ours[0].replace(chr(10), " ") if ours else "")
'''


@pytest.mark.parametrize("mode, says", [("compile", "vendor compiler crashed"),
                                        ("load", "libboom.so: cannot open shared object file"),
                                        ("run", "ZeroDivisionError: the device fell over")])
def test_a_plugin_that_raises_never_breaks_the_users_program(tmp_path, mode, says):
    """Issue 13 item 7: whatever raises inside byteir (a backend's compile, a provider's load, a kernel's first
    run) sends that graph to eager with one ByteirFallbackWarning quoting the failure; strict=True raises."""
    import subprocess
    import sys

    from plugin_factory import install_plugin

    install_plugin(tmp_path, "boom_plugin", BOOM_PLUGIN, "boom")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "BOOM_MODE": mode, "BYTEIR_CACHE_DIR": str(tmp_path / "c")}
    r = subprocess.run([sys.executable, "-c", BOOM_SCRIPT, "lenient"], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("WARNINGS 1 byteir failed on the inference graph, which runs in eager PyTorch"), \
        r.stdout + r.stderr[-2000:]
    assert says in r.stdout
    r = subprocess.run([sys.executable, "-c", BOOM_SCRIPT, "strict"], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0 and r.stdout.startswith("RAISED"), r.stdout + r.stderr[-2000:]
    assert says.split(": ")[-1] in r.stdout


def test_compiled_model_called_from_several_threads_never_recompiles():
    """Issue 13 item 5: torch.set_num_threads (parking torch's OpenMP pool around byteir's kernels) is
    process-wide and Dynamo guards on it; from several threads it made frames recompile (7 of 8 threads) and
    could leave torch on one thread. From threads: no new compiles, results equal eager, the setting intact."""
    import threading

    from byteir_frontend_torch import dynamo

    torch.manual_seed(0)
    model = zoo.MLP().eval()
    compiled = torch.compile(model, backend="byteir")
    xs = [torch.randn(2, 16) for _ in range(4)]
    threads_before = torch.get_num_threads()
    with torch.no_grad():
        compiled(xs[0])  # compiled once, single-threaded
        expected = [model(x) for x in xs]
    n_compiles = len(dynamo.compile_log)
    results, errors = {}, []

    def work(k):
        try:
            with torch.no_grad():
                for _ in range(25):
                    results[k] = compiled(xs[k])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for k in range(4):
        torch.testing.assert_close(results[k], expected[k], rtol=1e-4, atol=1e-5)
    assert len(dynamo.compile_log) == n_compiles, dynamo.compile_log[n_compiles:]
    assert torch.get_num_threads() == threads_before


def test_inputs_a_graph_returns_as_they_are_are_not_copied():
    """A training forward graph returns the weights it saves for backward: they come back as the very tensors
    given, not as copies made at every step; a value returned twice is computed once, and a view of a value
    (or of an input) is that view, not a copy."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, w):
        y = torch.mm(x, w.t())
        return y, w, x, y, y.view(2, 12), w.unsqueeze(0), torch.ops.aten.alias(y)

    x, w = torch.randn(4, 8), torch.randn(6, 8)
    run = dynamo._compile_whole(make_fx(f)(x, w), [x, w], dynamo.Options.parse({}), "forward")
    y, w_out, x_out, y_again, y_view, w_view, y_alias = run(x, w)
    assert w_out is w and x_out is x and y_again is y
    assert y_view.data_ptr() == y_alias.data_ptr() == y.data_ptr() and w_view.data_ptr() == w.data_ptr()
    torch.testing.assert_close(y, x @ w.t(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y_view, y.view(2, 12), rtol=0, atol=0)
    assert w_view.shape == (1, 6, 8)
    only_inputs = dynamo._compile_whole(make_fx(lambda x, w: (w, x))(x, w), [x, w], dynamo.Options.parse({}), "forward")
    assert [t is u for t, u in zip(only_inputs(x, w), (w, x))] == [True, True]


def test_gradients_are_handed_to_autograd_not_copied():
    """The parameter gradients a compiled backward returns become the parameters' .grad as they are (autograd
    steals a gradient nothing else holds) and a call's outputs die with their last user: nothing in the wrapper
    keeps them alive until the cyclic collector runs (a recursive closure over the outputs did, and every weight
    gradient was copied at every step)."""
    import gc
    import weakref

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    compiled = torch.compile(model, backend="byteir")
    x = torch.randn(4, 16)
    returned = []
    real_fill = dynamo._fill

    def recording_fill(template, call_args, res):
        full = real_fill(template, call_args, res)
        returned.append([(weakref.ref(t), t.data_ptr()) for t in full if isinstance(t, torch.Tensor)])
        return full

    dynamo._fill = recording_fill
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        compiled(x).sum().backward()
        returned.clear()
        model.zero_grad(set_to_none=True)
        compiled(x).sum().backward()
        backward_ptrs = {p for _, p in returned[-1]}
        assert all(p.grad.data_ptr() in backward_ptrs for p in model.parameters())
        returned.clear()
        with torch.no_grad():
            out = compiled(x)
        del out
        assert [r() for r, _ in returned[-1]] == [None]
    finally:
        dynamo._fill = real_fill
        if was_enabled:
            gc.enable()


def test_cross_entropy_backward_writes_its_one_hot_without_a_scatter():
    """Cross-entropy's backward scatters -1 into a zero tensor, one element per row: that is a select against
    an iota, fused into the softmax gradient, not a host scatter copying the whole logits-sized tensor. Rows
    with the ignored index (-100) get no gradient, as in eager; scatter with a tensor source works alike."""
    torch.manual_seed(0)
    log = _new_compiles()

    def loss(x, t):
        return torch.nn.functional.cross_entropy(x * 2, t)

    x, t = torch.randn(6, 10, requires_grad=True), torch.randint(0, 10, (6,))
    t[2] = -100
    compiled = torch.compile(loss, backend="byteir")
    got = compiled(x, t)
    got.backward()
    g, x.grad = x.grad, None
    want = loss(x, t)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, x.grad, rtol=1e-5, atol=1e-6)
    backward = [e for e in log() if e["kind"] == "backward"]
    assert backward and all("stablehlo.scatter" not in ops for e in backward
                            for ops in e["report"]["ops_per_backend"].values())

    def scatters(x, i, s):
        return torch.scatter(x, 1, i, s) * 2, torch.scatter(x, 0, torch.tensor([[3, 0, 1, 2, 2, 0]]), 3.5)

    x, i, s = torch.randn(4, 6), torch.tensor([[5], [0], [2], [5]]), torch.randn(4, 3)
    for a, b in zip(torch.compile(scatters, backend="byteir")(x, i, s), scatters(x, i, s)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_linear_layers_backward_has_no_transposes():
    """PyTorch writes a Linear's gradients with transposes around the products ((dy.T @ x).T, w.T.T): they
    cancel or fold into the products, so no weight-sized tensor is transposed at every step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    log = _new_compiles()
    compiled = torch.compile(model, backend="byteir")
    torch.nn.functional.mse_loss(compiled(torch.randn(4, 16)), torch.randn(4, 8)).backward()
    for entry in log():
        ops = entry["report"]["ops_per_backend"]
        assert not any("stablehlo.transpose" in per for per in ops.values()), (entry["kind"], ops)
