"""The pipeline driver: frontends, pass groups, partition report, errors, dumps, memory plan."""

from pathlib import Path

import numpy as np
import pytest
from programs import MLP, func

import byteir_core
from byteir_core.byre.format import READ, WRITE, Buffer, ByreModule, Step
from byteir_core.compiler.driver import optimize
from byteir_core.compiler.memplan import plan_memory
from byteir_core.dtypes import TensorSpec
from byteir_core.errors import FrontendError, NoFrontendError, PassGroupError, TargetError, UnsupportedOpError
from byteir_core.mlir import ir, module_to_bytecode, new_context, stablehlo_api


def test_report_says_everything_ran_on_reference_with_only_the_core(tmp_path):
    """With no third-party plugin loaded (BYTEIR_PLUGINS empty), --target cpu runs on reference and says so."""
    import json

    from plugin_factory import run_python

    r = run_python(tmp_path, "import json, byteir_core\nfrom programs import MLP\n"
                             "print(json.dumps(byteir_core.compile(MLP, target='cpu').report))",
                   BYTEIR_PLUGINS="", PYTHONPATH=f"{tmp_path}:{Path(__file__).parent}")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["fallback_chain"] == ["cpu", "reference"]
    assert set(rep["ops_per_backend"]) == {"reference"}
    assert "no installed backend serves target 'cpu'" in rep["notes"][0]
    assert all(op["backend"] == "reference" and op["loc"] for op in rep["ops"])
    assert any(k.startswith("hlo:") for k in rep["stage_seconds"])


def test_all_unsupported_ops_listed_at_once(tmp_path):
    text = func("%x: tensor<4xf32>", "tensor<4xf32>, tensor<3xf32>", """
  %a = stablehlo.custom_call @foo(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %b = stablehlo.custom_call @bar(%a) : (tensor<4xf32>) -> tensor<4xf32>
  %c = stablehlo.fft %x, type = RFFT, length = [4] : (tensor<4xf32>) -> tensor<3xcomplex<f32>>
  %r = stablehlo.real %c : (tensor<3xcomplex<f32>>) -> tensor<3xf32>
  %d = stablehlo.add %b, %x : tensor<4xf32>
  return %d, %r : tensor<4xf32>, tensor<3xf32>""")
    p = tmp_path / "bad.mlir"
    p.write_text(text)
    out = tmp_path / "bad.byre"
    with pytest.raises(UnsupportedOpError) as e:
        byteir_core.compile(p, output=out)
    gaps = {g.name: g for g in e.value.ops}
    assert gaps["stablehlo.custom_call"].count == 2
    assert gaps["stablehlo.custom_call"].locations[0].endswith(":3:8") and str(p) in gaps["stablehlo.custom_call"].locations[0]
    assert gaps["stablehlo.fft"].count == 1
    assert "stablehlo.add" not in gaps
    assert "fallback chain" in str(e.value)
    assert not out.exists()


def test_parse_error_names_file_and_line(tmp_path):
    p = tmp_path / "broken.mlir"
    p.write_text("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n  %y = stablehlo.add %x, %nope : tensor<4xf32>\n"
                 "  return %y : tensor<4xf32>\n}\n")
    with pytest.raises(FrontendError, match=r"broken.mlir.*:2:\d+.*undeclared SSA value"):
        byteir_core.compile(p)


def test_no_frontend_and_unknown_target_and_pass_group(tmp_path):
    with pytest.raises(NoFrontendError, match="no installed frontend accepts"):
        byteir_core.compile(tmp_path / "model.xyz")
    with pytest.raises(TargetError, match="unknown target 'nope'"):
        byteir_core.compile(MLP, target="nope")
    with pytest.raises(PassGroupError, match="unknown pass group.*does-not-exist"):
        byteir_core.compile(MLP, pass_groups=["does-not-exist"])


def test_unknown_target_lists_targets_not_member_backends():
    """Issue 14 finding 11: the unknown-target error listed the backends cpu_blas, cpu_host as targets."""
    with pytest.raises(TargetError) as e:
        byteir_core.compile(MLP, target="gpu")
    msg = str(e.value)
    assert "did you mean 'cuda'?" in msg
    targets = msg.split("; targets: ")[1].split(" (")[0].split(", ")
    assert "cpu" in targets and "reference" in targets and "cuda" in targets
    assert "cpu_blas" not in targets and "cpu_host" not in targets  # they are backends serving cpu
    assert "a single backend may also be named: cpu_blas, cpu_host" in msg


def test_unknown_options_are_errors_listing_the_valid_ones():
    """Issue 14 finding 3: options={"dynamic_shape": 1} was accepted silently."""
    with pytest.raises(byteir_core.OptionError, match=r"unknown option\(s\) 'dynamic_shape' for frontend "
                       r"'stablehlo'; its options: none"):
        byteir_core.compile(MLP, options={"dynamic_shape": 1})
    assert issubclass(byteir_core.OptionError, ValueError)


NAMED = """module attributes {byteir.structure = "{\\"outputs\\": {\\"dict\\": [[\\"probs\\", {\\"leaf\\": 1}], [\\"pair\\", {\\"tuple\\": [{\\"leaf\\": 0}, {\\"none\\": true}]}]]}}"} {
  func.func @main(%x: tensor<4xf32> {byteir.name = "x"}, %y: tensor<4xf32> {byteir.name = "y"})
      -> (tensor<4xf32> {byteir.name = "logits"}, tensor<4xf32> {byteir.name = "logits"}, tensor<4xf32>) {
    %s = stablehlo.add %x, %y : tensor<4xf32>
    %t = stablehlo.tanh %s : tensor<4xf32>
    %u = stablehlo.multiply %s, %x : tensor<4xf32>
    return %s, %t, %u : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
  }
}
"""


@pytest.mark.parametrize("suffix", [".byre", ".byre.mlir"])
def test_names_and_output_structure_from_the_frontend_reach_the_session(tmp_path, suffix):
    """A frontend names @main's arguments/results (byteir.name) and describes what the model returns
    (byteir.structure): the artifact keeps both, and the session returns the model's own structure."""
    art = byteir_core.compile(NAMED, target="cpu", output=tmp_path / f"m{suffix}")
    s = byteir_core.load(tmp_path / f"m{suffix}")
    assert [s.get_arg_name(o) for o in s.get_input_arg_offsets()] == ["x", "y"]
    # duplicates made unique; an unnamed result keeps its position's name
    assert [s.get_arg_name(o) for o in s.get_output_arg_offsets()] == ["logits", "logits_1", "output2"]
    x, y = np.arange(4, dtype=np.float32), np.ones(4, np.float32)
    out = s(x, y)
    assert list(out) == ["probs", "pair"] and out["pair"][1] is None
    np.testing.assert_allclose(out["probs"], np.tanh(x + y), rtol=1e-6)
    np.testing.assert_allclose(out["pair"][0], x + y)
    by_name = s(y=y, x=x)
    np.testing.assert_allclose(by_name["probs"], out["probs"])
    assert len(s.run(x, y)) == 3  # run() stays flat: every output, the unreferenced one too
    with pytest.raises(byteir_core.InputError, match=r"unknown input name\(s\) \['z'\]; the artifact's inputs "
                       r"are \['x', 'y'\]"):
        s(x, z=y)
    with pytest.raises(byteir_core.InputError, match="missing input"):
        s(x=x)
    assert art.module.structure["outputs"]["dict"][0][0] == "probs"


def test_a_structure_that_does_not_fit_is_refused():
    bad = NAMED.replace('{\\"leaf\\": 1}', '{\\"leaf\\": 7}')
    with pytest.raises(FrontendError, match="byteir.structure does not fit @main: .*leaf 7"):
        byteir_core.compile(bad, target="reference")


def test_portable_artifact_and_bytecode_inputs():
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    ref = byteir_core.load(byteir_core.compile(MLP).to_bytes())(x)
    vhlo = stablehlo_api.serialize_portable_artifact_str(MLP, "1.0.0")
    ctx = new_context()
    with ctx:
        bc = module_to_bytecode(ir.Module.parse(MLP))
    for blob in (vhlo, bc):
        out = byteir_core.load(byteir_core.compile(blob).to_bytes())(x)
        np.testing.assert_array_equal(out, ref)


def test_dump_dir_has_every_stage(tmp_path):
    byteir_core.compile(MLP, dump_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0].startswith("01-frontend-stablehlo")
    assert any("hlo-legalize" in n for n in names) and any("hlo-fold-constants" in n for n in names)
    assert names[-1].endswith("byre.mlir") and "byre.compute" in (tmp_path / names[-1]).read_text()
    (loadable,) = tmp_path.glob("*.byre")  # the artifact itself, re-enterable into the runtime
    x = np.ones((4, 16), np.float32)
    np.testing.assert_array_equal(byteir_core.load(loadable)(x), byteir_core.load(byteir_core.compile(MLP))(x))


def test_input_shapes_refine_dynamic_dims():
    text = func("%x: tensor<?x4xf32>", "tensor<?x4xf32>",
                "  %y = stablehlo.add %x, %x : tensor<?x4xf32>\n  return %y : tensor<?x4xf32>")
    with pytest.raises(UnsupportedOpError, match="dynamic shapes.*--input-shape"):
        byteir_core.compile(text)
    art = byteir_core.compile(text, input_shapes=[[3, 4]])
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(byteir_core.load(art.to_bytes())(x), 2 * x)
    with pytest.raises(FrontendError, match="does not fit"):
        byteir_core.compile(text, input_shapes=[[3, 5]])


def test_opt_runs_only_named_groups():
    text = func("%x: tensor<2xf32>", "tensor<2xf32>", """
  %a = stablehlo.constant dense<[1.0, 2.0]> : tensor<2xf32>
  %b = stablehlo.exponential %a : tensor<2xf32>
  %c = stablehlo.add %x, %b : tensor<2xf32>
  return %c : tensor<2xf32>""")
    assert "stablehlo.exponential" in optimize(text, ["legalize"])
    folded = optimize(text, ["fold-constants"])
    assert "stablehlo.exponential" not in folded and "2.71828" in folded


def test_memory_plan_reuses_dead_buffers_and_never_overlaps_live_ones():
    spec = TensorSpec((256,), "f32")  # 1 KiB each
    bufs = [Buffer(0, spec, "arg", arg=0)] + [Buffer(i, spec, "alloc") for i in range(1, 5)]
    bufs.append(Buffer(5, spec, "arg", arg=1))
    # chain: b1 = f(a); b2 = f(b1); b3 = f(b2); b4 = f(b3, b1) keeps b1 alive to the end
    steps = [Step("compute", [0, 1], effects=[READ, WRITE]), Step("compute", [1, 2], effects=[READ, WRITE]),
             Step("compute", [2, 3], effects=[READ, WRITE]), Step("compute", [3, 1, 4], effects=[READ, READ, WRITE]),
             Step("copy", [4, 5])]
    bm = ByreModule(args=[], buffers=bufs, steps=steps, kernels={}, weights={})
    size = plan_memory(bm)
    live = {1: (0, 3), 2: (1, 2), 3: (2, 3), 4: (3, 4)}
    for i in live:
        for j in live:
            if i < j and not (live[i][1] < live[j][0] or live[j][1] < live[i][0]):
                a, b = bufs[i], bufs[j]
                assert a.arena_offset + 1024 <= b.arena_offset or b.arena_offset + 1024 <= a.arena_offset, (i, j)
    assert size == 3 * 1024  # b2 and b4 share bytes: never more than three buffers are live at once
    assert bufs[2].arena_offset == bufs[4].arena_offset


def test_clusters_respect_a_backends_op_limit():
    from byteir_core.compiler.partition import form_clusters

    ops = ["a1", "a2", "a3", "b1", "a4"]
    assignment = {"a1": "lib", "a2": "lib", "a3": "lib", "b1": "gen", "a4": "lib"}
    assert form_clusters(ops, assignment) == [("lib", ["a1", "a2", "a3"]), ("gen", ["b1"]), ("lib", ["a4"])]
    assert form_clusters(ops, assignment, {"lib": 1, "gen": None}) == \
        [("lib", ["a1"]), ("lib", ["a2"]), ("lib", ["a3"]), ("gen", ["b1"]), ("lib", ["a4"])]
    assert form_clusters(ops, assignment, {"lib": 2}) == [("lib", ["a1", "a2"]), ("lib", ["a3"]), ("gen", ["b1"]),
                                                         ("lib", ["a4"])]


def test_a_cluster_joins_the_cluster_it_reads_across_other_backends():
    """A run split by another backend's op moves up into the cluster of its backend it reads from, when it reads
    nothing computed in between; library-call clusters (starts) and lone views stay as they are."""
    from byteir_core.compiler.partition import merge_consumer_clusters

    reads = {"a2": ["a1"], "g1": ["a2"], "c1": ["a2"], "c2": ["c1"], "g2": ["c2"], "d1": ["g2", "a1"],
             "r1": ["d1"], "e1": ["r1"]}
    clusters = [("gen", ["a1", "a2"]), ("lib", ["g1"]), ("gen", ["c1", "c2"]), ("lib", ["g2"]), ("gen", ["d1"]),
                ("gen", ["r1"]), ("gen", ["e1"])]
    merged = merge_consumer_clusters(clusters, lambda op: reads.get(op, []), is_view=lambda ops: ops == ["r1"])
    # c1, c2 read only a2: up into the first cluster; d1 reads g2, so it stays after it; e1 reads the view r1
    assert merged == [("gen", ["a1", "a2", "c1", "c2"]), ("lib", ["g1"]), ("lib", ["g2"]), ("gen", ["d1"]),
                      ("gen", ["r1"]), ("gen", ["e1"])]
    limited = merge_consumer_clusters(clusters, lambda op: reads.get(op, []), {"gen": 3})  # 2 + 2 > 3
    assert limited[:3] == [("gen", ["a1", "a2"]), ("lib", ["g1"]), ("gen", ["c1", "c2"])]
    started = merge_consumer_clusters(clusters, lambda op: reads.get(op, []), starts=lambda op, b: op == "a1")
    assert started[0] == ("gen", ["a1", "a2"]) and ("gen", ["c1", "c2"]) in started


def test_elementwise_work_around_a_product_is_one_kernel():
    """The SwiGLU backward pattern: ``dot(dy * silu(g), w)`` splits the elementwise ops in program order, yet the
    ones after it do not read the product. They land in the first kernel, which then writes only what the
    products and the return read: not the sigmoid or ``dy * u`` for a second kernel to read back."""
    text = func("%g: tensor<16x32xf32>, %u: tensor<16x32xf32>, %dy: tensor<16x32xf32>, %w: tensor<32x8xf32>",
                "tensor<16x8xf32>, tensor<16x32xf32>", """
  %s = stablehlo.logistic %g : tensor<16x32xf32>
  %silu = stablehlo.multiply %g, %s : tensor<16x32xf32>
  %a = stablehlo.multiply %dy, %silu : tensor<16x32xf32>
  %du = stablehlo.multiply %dy, %u : tensor<16x32xf32>
  %p = stablehlo.dot_general %a, %w, contracting_dims = [1] x [0] : (tensor<16x32xf32>, tensor<32x8xf32>) -> tensor<16x8xf32>
  %t = stablehlo.multiply %du, %s : tensor<16x32xf32>
  %one = stablehlo.constant dense<1.0> : tensor<16x32xf32>
  %q = stablehlo.subtract %one, %s : tensor<16x32xf32>
  %dg = stablehlo.multiply %t, %q : tensor<16x32xf32>
  return %p, %dg : tensor<16x8xf32>, tensor<16x32xf32>""")
    art = byteir_core.compile(text, target="cpu")
    computes = [c for c in art.report["clusters"] if c.get("callee")]
    assert [c["backend"] for c in computes] == ["cpu", "cpu_blas"], computes
    rng = np.random.default_rng(0)
    g, u, dy = (rng.standard_normal((16, 32)).astype(np.float32) for _ in range(3))
    w = rng.standard_normal((32, 8)).astype(np.float32)
    p, dg = byteir_core.load(art).run(g, u, dy, w)
    s = 1 / (1 + np.exp(-g))
    np.testing.assert_allclose(p, (dy * g * s) @ w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dg, dy * u * s * (1 - s), rtol=1e-5, atol=1e-6)


def test_transposed_weight_is_folded_into_a_weight_in_kernel_layout():
    w = np.arange(64 * 48, dtype=np.float32).reshape(64, 48) / 100  # 12 KiB: beyond interpreter folding size
    text = func("%x: tensor<2x48xf32>", "tensor<2x64xf32>", f"""
  %w = stablehlo.constant dense<{w.tolist()}> : tensor<64x48xf32>
  %t = stablehlo.transpose %w, dims = [1, 0] : (tensor<64x48xf32>) -> tensor<48x64xf32>
  %y = stablehlo.dot_general %x, %t, contracting_dims = [1] x [0] : (tensor<2x48xf32>, tensor<48x64xf32>) -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>""")
    art = byteir_core.compile(text, target="reference")
    ops = art.report["ops_per_backend"]["reference"]
    assert "stablehlo.transpose" not in ops and ops["stablehlo.dot_general"] == 1
    (weight,) = art.module.weights.values()
    np.testing.assert_array_equal(np.frombuffer(weight, np.float32).reshape(48, 64), w.T)
    x = np.random.default_rng(0).standard_normal((2, 48)).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x), x @ w.T, rtol=1e-5, atol=1e-4)


def test_rank0_reshape_and_tensor_arith_constant_fold():
    text = func("%x: tensor<4xf32>", "tensor<4xf32>", """
  %c = arith.constant dense<[2.5]> : tensor<1xf32>
  %s = stablehlo.reshape %c : (tensor<1xf32>) -> tensor<f32>
  %b = stablehlo.broadcast_in_dim %s, dims = [] : (tensor<f32>) -> tensor<4xf32>
  %y = stablehlo.multiply %x, %b : tensor<4xf32>
  return %y : tensor<4xf32>""")
    art = byteir_core.compile(text, target="reference")
    assert art.report["ops_per_backend"] == {"reference": {"stablehlo.multiply": 1}}
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(byteir_core.load(art.to_bytes())(x), x * 2.5)


def test_dense_resource_weights_become_weights():
    """torch-mlir's FX importer stores weights as dense_resource blobs; they are read back into weights."""
    w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 1000
    text = func("%x: tensor<4x64xf32>", "tensor<4x64xf32>", """
  %w = stablehlo.constant dense_resource<wblob> : tensor<64x64xf32>
  %y = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x64xf32>, tensor<64x64xf32>) -> tensor<4x64xf32>
  return %y : tensor<4x64xf32>""") + ('{-#\n  dialect_resources: {\n    builtin: {\n      wblob: "0x04000000'
                                       + w.tobytes().hex() + '"\n    }\n  }\n#-}\n')
    art = byteir_core.compile(text, target="reference")
    assert list(art.module.weights.values()) == [w.tobytes()]
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x), x @ w, rtol=1e-5, atol=1e-4)
    short = text.replace(w.tobytes().hex(), w.tobytes().hex()[:-8])
    with pytest.raises(PassGroupError, match="dense_resource<wblob> holds 16380 bytes"):
        byteir_core.compile(short)


@pytest.mark.parametrize("exponent,replacement", [("2.0", "stablehlo.multiply"), ("0.5", "stablehlo.sqrt"),
                                                  ("-0.5", "stablehlo.rsqrt"), ("1.5", "stablehlo.power")])
def test_power_by_a_constant_is_simplified(exponent, replacement):
    text = func("%x: tensor<6xf32>", "tensor<6xf32>", f"""
  %c = stablehlo.constant dense<{exponent}> : tensor<6xf32>
  %p = stablehlo.power %x, %c : tensor<6xf32>
  return %p : tensor<6xf32>""")
    art = byteir_core.compile(text, target="reference")
    assert art.report["ops_per_backend"] == {"reference": {replacement: 1}}
    x = np.array([0.5, 1.0, 2.0, 3.0, 4.5, 9.0], np.float32)
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x), x ** float(exponent), rtol=1e-6)


@pytest.mark.parametrize("shape,dims,result", [((0, 5), [0], (5,)), ((3, 0), [1], (3,)), ((0, 4), [1], (0,))])
@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_a_reduce_of_no_elements_is_its_init_value(shape, dims, result, target):
    """A sum (init 0) and a max (init -inf) over an empty set; the CPU code generator could not compile the loop
    over nothing, so it never sees one."""
    t_in = "tensor<" + "x".join(map(str, shape)) + "xf32>"
    t_out = "tensor<" + "".join(f"{d}x" for d in result) + "f32>"
    text = func(f"%x: {t_in}", f"{t_out}, {t_out}", f"""
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %m = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %s = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = {dims} : ({t_in}, tensor<f32>) -> {t_out}
  %n = stablehlo.reduce(%x init: %m) applies stablehlo.maximum across dimensions = {dims} : ({t_in}, tensor<f32>) -> {t_out}
  return %s, %n : {t_out}, {t_out}""")
    art = byteir_core.compile(text, target=target, progress=False)
    assert "stablehlo.reduce" not in str(art.report.get("ops_per_backend"))
    x = np.zeros(shape, np.float32)
    s, n = byteir_core.load(art.to_bytes()).run(x)
    np.testing.assert_array_equal(s, x.sum(axis=tuple(dims)))
    np.testing.assert_array_equal(n, np.full(result, -np.inf, np.float32))


@pytest.mark.parametrize("case", ["rhs-2d", "lhs-batched", "free-order-changes"])
def test_transposes_fold_into_dot_general_when_the_result_is_unchanged(case):
    if case == "rhs-2d":  # x @ w.T with w an argument (torch.compile graphs): no transpose left
        args, ty, body = "%x: tensor<4x8xf32>, %w: tensor<6x8xf32>", "tensor<4x6xf32>", """
  %t = stablehlo.transpose %w, dims = [1, 0] : (tensor<6x8xf32>) -> tensor<8x6xf32>
  %y = stablehlo.dot_general %x, %t, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x6xf32>) -> tensor<4x6xf32>"""
        shapes, ref, folded = [(4, 8), (6, 8)], lambda x, w: x @ w.T, True
    elif case == "lhs-batched":  # q.transpose(1, 2) @ k (batch dims move, free dims keep their order)
        args, ty, body = "%q: tensor<2x5x3x4xf32>, %k: tensor<2x3x4x7xf32>", "tensor<2x3x5x7xf32>", """
  %t = stablehlo.transpose %q, dims = [0, 2, 1, 3] : (tensor<2x5x3x4xf32>) -> tensor<2x3x5x4xf32>
  %y = stablehlo.dot_general %t, %k, batching_dims = [0, 1] x [0, 1], contracting_dims = [3] x [2] : (tensor<2x3x5x4xf32>, tensor<2x3x4x7xf32>) -> tensor<2x3x5x7xf32>"""
        shapes, ref, folded = [(2, 5, 3, 4), (2, 3, 4, 7)], lambda q, k: q.transpose(0, 2, 1, 3) @ k, True
    else:  # the transpose swaps two free dims: folding would change the result layout, so it stays
        args, ty, body = "%x: tensor<3x4x5xf32>, %w: tensor<5x2xf32>", "tensor<4x3x2xf32>", """
  %t = stablehlo.transpose %x, dims = [1, 0, 2] : (tensor<3x4x5xf32>) -> tensor<4x3x5xf32>
  %y = stablehlo.dot_general %t, %w, contracting_dims = [2] x [0] : (tensor<4x3x5xf32>, tensor<5x2xf32>) -> tensor<4x3x2xf32>"""
        shapes, ref, folded = [(3, 4, 5), (5, 2)], lambda x, w: x.transpose(1, 0, 2) @ w, False
    art = byteir_core.compile(func(args, ty, body + f"\n  return %y : {ty}"), target="reference")
    ops = art.report["ops_per_backend"]["reference"]
    assert ("stablehlo.transpose" not in ops) == folded, ops
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(*xs), ref(*xs), rtol=1e-5, atol=1e-5)


def _conv_bn_program(layout: str, extra_use: bool = False):
    """conv (constant weights) -> (y - mean) * invstd * gamma + beta -> relu, BatchNorm as torch-mlir emits it
    (per-channel constants broadcast along the feature dim; invstd computed from the variance in the program)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)  # OIHW
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    if layout == "nchw":
        xt, yt, dn, fd = "tensor<1x2x6x6xf32>", "tensor<1x4x6x6xf32>", "[b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]", 1
    else:
        xt, yt, dn, fd = "tensor<1x6x6x2xf32>", "tensor<1x6x6x4xf32>", "[b, 0, 1, f]x[o, i, 0, 1]->[b, 0, 1, f]", 3

    def vec(name, v):
        return (f"  %{name}0 = stablehlo.constant dense<{np.array2string(v, separator=',', precision=9)}> : tensor<4xf32>\n"
                f"  %{name} = stablehlo.broadcast_in_dim %{name}0, dims = [{fd}] : (tensor<4xf32>) -> {yt}\n")

    wtxt = np.array2string(w, separator=",", precision=9, threshold=10**6).replace("\n", "")
    body = f"""
  %w = stablehlo.constant dense<{wtxt}> : tensor<4x2x3x3xf32>
  %y = stablehlo.convolution(%x, %w) dim_numbers = {dn}, window = {{pad = [[1, 1], [1, 1]]}} {{batch_group_count = 1 : i64, feature_group_count = 1 : i64}} : ({xt}, tensor<4x2x3x3xf32>) -> {yt}
{vec("m", mean)}{vec("g", gamma)}{vec("b", beta)}  %v0 = stablehlo.constant dense<{np.array2string(var, separator=',', precision=9)}> : tensor<4xf32>
  %eps = stablehlo.constant dense<1.0e-05> : tensor<4xf32>
  %ve = stablehlo.add %v0, %eps : tensor<4xf32>
  %is0 = stablehlo.rsqrt %ve : tensor<4xf32>
  %is = stablehlo.broadcast_in_dim %is0, dims = [{fd}] : (tensor<4xf32>) -> {yt}
  %c = stablehlo.subtract %y, %m : {yt}
  %s = stablehlo.multiply %c, %is : {yt}
  %t = stablehlo.multiply %s, %g : {yt}
  %u = stablehlo.add %t, %b : {yt}
  %z = stablehlo.constant dense<0.0> : {yt}
  %r = stablehlo.maximum %u, %z : {yt}"""
    ret = f"  return %r, %y : {yt}, {yt}" if extra_use else f"  return %r : {yt}"
    outs = f"{yt}, {yt}" if extra_use else yt
    text = func(f"%x: {xt}", outs, body + "\n" + ret)

    def ref(x):
        xn = x if layout == "nchw" else x.transpose(0, 3, 1, 2)
        xp = np.pad(xn, [(0, 0), (0, 0), (1, 1), (1, 1)])
        y = np.zeros((1, 4, 6, 6), np.float64)
        for i in range(3):
            for j in range(3):
                y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 6, j:j + 6], w[:, :, i, j])
        sh = (1, 4, 1, 1)
        r = np.maximum((y - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + 1e-5) * gamma.reshape(sh)
                       + beta.reshape(sh), 0)
        return r if layout == "nchw" else r.transpose(0, 2, 3, 1)

    return text, ref, xt


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_batchnorm_after_a_convolution_folds_into_its_weights(layout):
    text, ref, _ = _conv_bn_program(layout)
    art = byteir_core.compile(text, target="reference")
    ops = art.report["ops_per_backend"]["reference"]
    assert ops == {"stablehlo.convolution": 1, "stablehlo.broadcast_in_dim": 1, "stablehlo.add": 1,
                   "stablehlo.maximum": 1}, ops
    shape = (1, 2, 6, 6) if layout == "nchw" else (1, 6, 6, 2)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x), ref(x), rtol=1e-4, atol=1e-4)


def test_batchnorm_is_not_folded_when_the_convolution_result_is_also_used_elsewhere():
    text, _, _ = _conv_bn_program("nchw", extra_use=True)
    ops = byteir_core.compile(text, target="reference").report["ops_per_backend"]["reference"]
    assert ops.get("stablehlo.multiply") == 2 and ops.get("stablehlo.subtract") == 1, ops


def test_identical_clusters_share_one_kernel():
    """Two layers with the same shapes (different weights, as arguments) -> one compiled kernel, used twice."""
    text = func("%x: tensor<4x8xf32>, %a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %w: tensor<8x8xf32>",
                "tensor<4x8xf32>", """
  %t1 = stablehlo.tanh %x : tensor<4x8xf32>
  %m1 = stablehlo.multiply %t1, %a : tensor<4x8xf32>
  %d1 = stablehlo.dot_general %m1, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %t2 = stablehlo.tanh %d1 : tensor<4x8xf32>
  %m2 = stablehlo.multiply %t2, %b : tensor<4x8xf32>
  %d2 = stablehlo.dot_general %m2, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  return %d2 : tensor<4x8xf32>""")
    art = byteir_core.compile(text, target="cpu")
    natives = [s for s in art.module.steps if s.callee == "cpu.native"]
    assert len(natives) == 2 and len({s.kernel for s in natives}) == 1
    assert [c["backend"] for c in art.report["clusters"] if c.get("same_as_earlier_cluster")] == ["cpu", "cpu_blas"]
    rng = np.random.default_rng(5)
    x, a, b = (rng.standard_normal((4, 8)).astype(np.float32) for _ in range(3))
    w = rng.standard_normal((8, 8)).astype(np.float32)
    expect = (np.tanh((np.tanh(x) * a) @ w) * b) @ w
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x, a, b, w), expect, rtol=1e-5, atol=1e-5)


def test_a_returned_reshape_is_written_in_place_by_its_producer():
    text = func("%x: tensor<4x8xf32>, %w: tensor<8x6xf32>", "tensor<2x12xf32>", """
  %d = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x6xf32>) -> tensor<4x6xf32>
  %r = stablehlo.reshape %d : (tensor<4x6xf32>) -> tensor<2x12xf32>
  return %r : tensor<2x12xf32>""")
    art = byteir_core.compile(text, target="cpu")
    assert [s.op for s in art.module.steps] == ["compute"]  # no copy into the output
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 6)).astype(np.float32)
    s = byteir_core.load(art.to_bytes())
    for _ in range(2):  # the output buffer changes per request; the view follows it
        np.testing.assert_allclose(s(x, w), (x @ w).reshape(2, 12), rtol=1e-5, atol=1e-5)


def test_a_broadcast_shared_by_two_clusters_is_recomputed_in_each():
    text = func("%x: tensor<4x8xf32>, %m: tensor<8xf32>, %w: tensor<8x8xf32>", "tensor<4x8xf32>", """
  %b = stablehlo.broadcast_in_dim %m, dims = [1] : (tensor<8xf32>) -> tensor<4x8xf32>
  %y = stablehlo.add %x, %b : tensor<4x8xf32>
  %d = stablehlo.dot_general %y, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %z = stablehlo.multiply %d, %b : tensor<4x8xf32>
  return %z : tensor<4x8xf32>""")
    art = byteir_core.compile(text, target="cpu")
    natives = [s for s in art.module.steps if s.callee == "cpu.native"]
    assert [s.effects.count(2) for s in natives] == [1, 1]  # each writes only its own result, not %b
    rng = np.random.default_rng(8)
    x, m, w = rng.standard_normal((4, 8)), rng.standard_normal(8), rng.standard_normal((8, 8))
    x, m, w = (a.astype(np.float32) for a in (x, m, w))
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x, m, w), ((x + m) @ w) * m, rtol=1e-5, atol=1e-5)


def test_a_reshape_only_another_backend_reads_is_a_view_not_a_cluster_result():
    text = func("%x: tensor<4x8xf32>, %w: tensor<4x4xf32>", "tensor<8x4xf32>, tensor<4x8xf32>", """
  %t = stablehlo.tanh %x : tensor<4x8xf32>
  %r = stablehlo.reshape %t : (tensor<4x8xf32>) -> tensor<8x4xf32>
  %u = stablehlo.exponential %x : tensor<4x8xf32>
  %d = stablehlo.dot_general %r, %w, contracting_dims = [1] x [0] : (tensor<8x4xf32>, tensor<4x4xf32>) -> tensor<8x4xf32>
  return %d, %u : tensor<8x4xf32>, tensor<4x8xf32>""")
    art = byteir_core.compile(text, target="cpu")
    bm = art.module
    written = [tuple(bm.buffers[o].spec.shape) for s in bm.steps if s.callee == "cpu.native"
               for o, e in zip(s.operands, s.effects) if e == 2]
    assert (8, 4) not in written and len([s for s in bm.steps if s.callee == "cpu.native"]) == 1
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32)
    d, u = byteir_core.load(art.to_bytes())(x, w)
    np.testing.assert_allclose(d, np.tanh(x).reshape(8, 4) @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(u, np.exp(x), rtol=1e-6)


def test_nchw_convolutions_become_channels_last_and_their_transposes_cancel():
    rng = np.random.default_rng(10)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    dn = "dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {pad = [[1, 1], [1, 1]]}"
    at = "{batch_group_count = 1 : i64, feature_group_count = 1 : i64}"
    lit = lambda a: "dense<" + np.array2string(a, separator=",", precision=9, threshold=10**6).replace("\n", "") + ">"  # noqa: E731
    text = func("%x: tensor<1x2x8x8xf32>", "tensor<1x5xf32>, tensor<1x4x8x8xf32>", f"""
  %w1 = stablehlo.constant {lit(w1)} : tensor<4x2x3x3xf32>
  %w2 = stablehlo.constant {lit(w2)} : tensor<5x4x3x3xf32>
  %c1 = stablehlo.convolution(%x, %w1) {dn} {at} : (tensor<1x2x8x8xf32>, tensor<4x2x3x3xf32>) -> tensor<1x4x8x8xf32>
  %bc = stablehlo.constant {lit(b)} : tensor<4xf32>
  %bb = stablehlo.broadcast_in_dim %bc, dims = [1] : (tensor<4xf32>) -> tensor<1x4x8x8xf32>
  %y = stablehlo.add %c1, %bb : tensor<1x4x8x8xf32>
  %z = stablehlo.constant dense<0.0> : tensor<1x4x8x8xf32>
  %r = stablehlo.maximum %y, %z : tensor<1x4x8x8xf32>
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %p = "stablehlo.reduce_window"(%r, %ninf) ({{
    ^bb0(%a: tensor<f32>, %e: tensor<f32>):
      %m = stablehlo.maximum %a, %e : tensor<f32>
      stablehlo.return %m : tensor<f32>
  }}) {{window_dimensions = array<i64: 1, 1, 2, 2>, window_strides = array<i64: 1, 1, 2, 2>}} : (tensor<1x4x8x8xf32>, tensor<f32>) -> tensor<1x4x4x4xf32>
  %c2 = stablehlo.convolution(%p, %w2) {dn} {at} : (tensor<1x4x4x4xf32>, tensor<5x4x3x3xf32>) -> tensor<1x5x4x4xf32>
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%c2 init: %zero) applies stablehlo.add across dimensions = [2, 3] : (tensor<1x5x4x4xf32>, tensor<f32>) -> tensor<1x5xf32>
  return %s, %r : tensor<1x5xf32>, tensor<1x4x8x8xf32>""")
    art = byteir_core.compile(text, target="reference")
    ops = art.report["ops_per_backend"]["reference"]
    # the input is transposed once; %r, returned in NCHW, once; nothing between the convolutions
    assert ops["stablehlo.transpose"] == 2, ops
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)

    def conv(a, w):
        ap = np.pad(a, [(0, 0), (0, 0), (1, 1), (1, 1)])
        h = a.shape[2]
        return sum(np.einsum("nchw,oc->nohw", ap[:, :, i:i + h, j:j + h], w[:, :, i, j])
                   for i in range(3) for j in range(3))

    r = np.maximum(conv(x, w1) + b.reshape(1, 4, 1, 1), 0)
    p = r.reshape(1, 4, 4, 2, 4, 2).max(axis=(3, 5))
    s, r_out = byteir_core.load(art.to_bytes())(x)
    np.testing.assert_allclose(r_out, r, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s, conv(p, w2).sum(axis=(2, 3)), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("env, shown", [("1", True), ("0", False), ("", False)])
def test_long_compiles_show_progress_on_a_terminal_only(tmp_path, env, shown):
    """Issue 14 finding 6: long compiles showed nothing. A compile over DELAY_S shows a progress line on stderr
    when it is a terminal (here forced with BYTEIR_PROGRESS=1; a pipe and BYTEIR_PROGRESS=0 show nothing)."""
    import subprocess
    import sys

    script = ("import byteir_core, byteir_core.progress as p\np.DELAY_S = 0.0\n"
              f"byteir_core.compile({MLP!r}, target='cpu')\nprint('done')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "BYTEIR_PROGRESS": env})
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert ("compiling" in r.stderr) == shown, r.stderr


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_a_slice_of_nothing_is_an_empty_constant(target):
    """ONNX's Split with a zero-size part: the empty slice is a constant, so the CPU code generator (which could not
    compile a copy of nothing) never sees it; the non-empty part is computed as before."""
    text = func("%x: tensor<4x3xf32>", "tensor<0x3xf32>, tensor<4x3xf32>", """
  %e = stablehlo.slice %x [2:2, 0:3] : (tensor<4x3xf32>) -> tensor<0x3xf32>
  %a = stablehlo.add %x, %x : tensor<4x3xf32>
  return %e, %a : tensor<0x3xf32>, tensor<4x3xf32>""")
    art = byteir_core.compile(text, target=target, progress=False)
    assert "stablehlo.slice" not in str(art.report.get("ops_per_backend"))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    e, a = byteir_core.load(art.to_bytes()).run(x)
    assert e.shape == (0, 3) and e.dtype == np.float32
    np.testing.assert_array_equal(a, x + x)


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_bf16_and_float8_constants_keep_their_values(target):
    """Constants returned directly become weights: MLIR's NumPy view of a bf16/float8 attribute is not its values,
    so their bytes come from the attribute itself (a folded bf16 Range returned wrong bytes before)."""
    import ml_dtypes

    text = func("%x: tensor<3xf32>", "tensor<3xbf16>, tensor<2x2xbf16>, tensor<2xf8E4M3FN>, tensor<3xf32>", """
  %a = stablehlo.constant dense<[1.5, -2.0, 0x7FC0]> : tensor<3xbf16>
  %b = stablehlo.constant dense<0.25> : tensor<2x2xbf16>
  %c = stablehlo.constant dense<[0.5, -448.0]> : tensor<2xf8E4M3FN>
  %y = stablehlo.add %x, %x : tensor<3xf32>
  return %a, %b, %c, %y : tensor<3xbf16>, tensor<2x2xbf16>, tensor<2xf8E4M3FN>, tensor<3xf32>""")
    art = byteir_core.compile(text, target=target, progress=False)
    a, b, c, y = byteir_core.load(art.to_bytes()).run(np.ones(3, np.float32))
    np.testing.assert_array_equal(a.astype(np.float32), np.array([1.5, -2.0, np.nan], np.float32))
    assert a.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(b.astype(np.float32), np.full((2, 2), 0.25, np.float32))
    np.testing.assert_array_equal(c.astype(np.float32), np.array([0.5, -448.0], np.float32))
    np.testing.assert_array_equal(y, np.full(3, 2.0, np.float32))
