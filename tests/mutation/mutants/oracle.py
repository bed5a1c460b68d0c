"""Mutants of the synthetic oracle and its scoring (vedgan/oracle.py, vedgan/oracle_eval.py)."""
from mutation.mutant import Mutant

ORACLE = "vedgan/oracle.py"
EVAL = "vedgan/oracle_eval.py"
AGREE = "tests/test_oracle.py::test_sampler_and_nll_agree"
NPZ = "tests/test_oracle.py::test_npz_layout_reproduces_logits_exactly"
RUN = "tests/test_oracle.py::test_demo_mle_run_writes_oracle_metrics_and_nll_test_falls"

MUTANTS = [
    Mutant("oracle/gates_i_f_swapped", ORACLE,
           'i, f, o = gate("i", jax.nn.sigmoid), gate("f", jax.nn.sigmoid)',
           'f, i, o = gate("i", jax.nn.sigmoid), gate("f", jax.nn.sigmoid)',
           "SeqGAN's oracle LSTM: c = f*c + i*tanh(.) with each gate's own weights",
           (NPZ, AGREE)),
    Mutant("oracle/start_token", ORACLE,
           "jnp.full((num,), START_TOKEN, jnp.int32)", "jnp.full((num,), START_TOKEN + 1, jnp.int32)",
           "the first input is the embedding of token 0 (SeqGAN start_token = 0)", (NPZ, AGREE)),
    Mutant("oracle/sample_ignores_temperature", EVAL,
           "o[:, OFFSET:] / temperature", "o[:, OFFSET:]",
           "the temperature sweep samples from softmax(o / T)", (RUN,)),
    Mutant("oracle/nll_test_ignores_temperature", EVAL,
           "tokens_in) / temperature", "tokens_in)",
           "NLL-test at temperature T scores the data under softmax(o / T)", (RUN,)),
]
