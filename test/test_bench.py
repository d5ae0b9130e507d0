"""cobra-bench on CPU at a small shape: it measures both engines and the memory claim holds."""
import json
import subprocess
import sys


def test_bench_reports_ratios_and_flat_state_against_a_growing_kv_cache(tmp_path):
    out = tmp_path / "bench.json"
    printed = subprocess.run([sys.executable, "-m", "cobra_ros.cli.bench", "--preset", "micro", "--new-tokens", "12",
                              "--batch", "2", "--yes-no-repeats", "3", "--prompt-lengths", "64,128,256",
                              "--json", str(out)], capture_output=True, text=True, timeout=300, check=True).stdout
    results = json.loads(out.read_text())
    ours, transformer = results["ours"], results["transformer"]
    state = [ours["state_bytes"][k] for k in ("64", "128", "256")]
    kv = [transformer["cache_bytes"][k] for k in ("64", "128", "256")]
    assert state[0] == state[1] == state[2] > 0  # Mamba keeps the same state whatever the prompt length
    assert kv[1] == 2 * kv[0] and kv[2] == 4 * kv[0]  # the transformer's cache grows with it
    assert ours["decode_tokens_per_s"] > 0 and transformer["decode_tokens_per_s"] > 0
    assert "decode (tokens/s)" in printed and "memory at 256 prompt tokens" in printed
    assert out.with_suffix(".png").stat().st_size > 0
