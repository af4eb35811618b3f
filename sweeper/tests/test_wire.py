"""The wire (wire.py): every name the sweeper and its jobs share is spelled there alone."""

from __future__ import annotations

import ast
from pathlib import Path

from hydra_study_sweeper import wire

PACKAGE = Path(wire.__file__).parent
WRITERS = {"set_user_attr", "set_trial_user_attr"}  # calls that take a stored name first
STORES = ("user_attrs", "environ")  # dicts whose keys are wire names (x.get("name"), x["name"])


def spelled_out(path: Path) -> list[str]:
    """`LINE: literal` for each wire name written as a string instead of taken from wire.py: an
    environment variable of the sweeper's, or a string given first to a call that reads or writes a
    user attribute or an environment variable (trial.set_user_attr("x", ...), attrs.get("x"),
    os.environ.get("X")), or used as a key of user_attrs or os.environ."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        literal = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(wire.PREFIX):
            literal = node
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and reads_or_writes(node.func):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                literal = first
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith(STORES):
            key = node.slice
            literal = key if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
        if literal is not None:
            found.append(f"{path.name}:{literal.lineno}: {literal.value!r}")
    return found


def reads_or_writes(func: ast.Attribute) -> bool:
    return func.attr in WRITERS or (func.attr == "get" and ast.unparse(func.value).endswith(STORES))


def test_no_module_spells_a_shared_name_itself():
    found = [u for f in sorted(PACKAGE.glob("*.py")) if f.name != "wire.py" for u in spelled_out(f)]
    assert found == [], "names the job and the sweeper share, spelled outside wire.py:\n" + "\n".join(found)


def test_the_scan_finds_what_it_is_written_for(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom .wire import FAIL_ATTR\n"
        "def f(trial, t):\n"
        "    trial.set_user_attr('worker', 1)\n"
        "    os.environ.get('CUDA_VISIBLE_DEVICES')\n"
        "    x = 'HYDRA_STUDY_SWEEPER_NEW'\n"
        "    t.user_attrs['dir']\n"
        "    trial.set_user_attr(FAIL_ATTR, 'why')\n"
        "    return {'fail_reason': 1}\n"  # a column of the summary, not a stored name
    )
    assert [u.split(": ", 1)[1] for u in spelled_out(module)] == [
        "'worker'",
        "'CUDA_VISIBLE_DEVICES'",
        "'HYDRA_STUDY_SWEEPER_NEW'",
        "'dir'",
    ]


def test_the_names_are_distinct():
    names = {k: v for k, v in vars(wire).items() if k.isupper() and isinstance(v, str)}
    values = list(names.values())
    assert len(values) == len(set(values)), names
