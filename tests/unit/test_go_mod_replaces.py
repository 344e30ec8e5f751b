import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "go_mod_replaces.py"
spec = importlib.util.spec_from_file_location("go_mod_replaces", SCRIPT)
go_mod_replaces = importlib.util.module_from_spec(spec)
spec.loader.exec_module(go_mod_replaces)


def test_block_and_single_line_replaces_are_kept_in_order():
    go_mod = """module github.com/cloudflare/cloudflared

go 1.22

require github.com/urfave/cli/v2 v2.3.0

replace github.com/urfave/cli/v2 => github.com/ipostelnik/cli/v2 v2.3.1-0.20210324024421-b6ea8234fe3d // fork

replace (
    // quic with our patches
    github.com/quic-go/quic-go => github.com/chungthuang/quic-go v0.45.1-0.20250428085412-43229ad201fd

    github.com/prometheus/golang_client => github.com/prometheus/client_golang v1.19.1
)
"""
    assert go_mod_replaces.replaces(go_mod) == [
        "replace github.com/quic-go/quic-go => github.com/chungthuang/quic-go v0.45.1-0.20250428085412-43229ad201fd",
        "replace github.com/prometheus/golang_client => github.com/prometheus/client_golang v1.19.1",
        "replace github.com/urfave/cli/v2 => github.com/ipostelnik/cli/v2 v2.3.1-0.20210324024421-b6ea8234fe3d",
    ]


def test_module_without_replaces_gives_nothing():
    assert go_mod_replaces.replaces("module example.com/x\n\ngo 1.22\n") == []


def test_replace_to_a_local_path_is_refused():
    with pytest.raises(ValueError, match="local path"):
        go_mod_replaces.replaces("module x\n\nreplace example.com/y => ./y\n")
