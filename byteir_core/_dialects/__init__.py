"""Empty Python modules for the dialects whose ops byteir walks but torch-mlir's wheel ships no Python module for
(``stablehlo``, ``chlo``, and the unregistered ``byre``).

The MLIR bindings look up ``<prefix>.<dialect>`` each time they wrap an op of a dialect whose module they have not
loaded yet, and a failed lookup is not remembered: every op of these dialects went through Python's import
machinery (about 80 us per op, most of a large model's time in Python passes). With these modules found on a
search prefix (:func:`byteir_core.mlir.new_context` adds it), the first lookup succeeds and is cached; ops are
then wrapped as generic ``OpView`` objects, exactly as before."""
