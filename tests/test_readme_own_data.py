"""The README's 'Bringing your own data': its five-line numpy block writes a file the app opens and measures."""
from __future__ import annotations

import re
from pathlib import Path

from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate

README = Path(__file__).resolve().parent.parent / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Bringing your own data")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_numpy_block_writes_a_file_the_app_opens(tmp_path, monkeypatch):
    block = re.findall(r"```python\n(.*?)```", _section(), re.S)[0]
    assert len(block.strip().splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README", "exec"), {})
    s = Session.open(None, "tensors:mydata.npz", arch="tests.tensor_models:TabularMLP", trust=True)
    ds = s.dataset
    assert ds.input_shape == (12,) and ds.num_classes == 2 and ds.metric == "accuracy"
    assert [ds.size(k) for k in ("train", "val", "test")] == [800, 100, 100]
    r = evaluate(s.module, ds, "test")
    assert r.samples == 100 and 0 <= r.accuracy <= 100
    assert "tensors:PATH" in README.read_text() and "tensors:mydata.npz" in _section()
