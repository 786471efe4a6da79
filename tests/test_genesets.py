"""Tests for sktx.genesets: built-in lists, readers, the gene_sets grammar, aliases."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sktx.genesets import (
    ALIASES,
    BUILTIN_GENE_SETS,
    CATEGORIES,
    _io,
    load_gene_sets,
    read_gene_sets,
    read_gmt,
    read_list,
    resolve_aliases,
)


def test_builtin_sets_are_short_curated_symbol_lists():
    assert set(BUILTIN_GENE_SETS) == {"tf", "cell_cycle", "metabolic", "pluripotency"}
    assert tuple(BUILTIN_GENE_SETS) == CATEGORIES
    sizes = {k: len(v) for k, v in BUILTIN_GENE_SETS.items()}
    assert sizes == {"tf": 46, "cell_cycle": 40, "metabolic": 32, "pluripotency": 22}
    for genes in BUILTIN_GENE_SETS.values():
        assert len(set(genes)) == len(genes)
        assert all(re.fullmatch(r"[A-Z0-9-]+", g) for g in genes)
        # Built-ins use current symbols only, never an outdated alias.
        assert not set(genes) & set(ALIASES)
    for gene in ("SOX2", "POU5F1", "NANOG", "MYC", "GATA1", "KLF1", "CEBPA", "SPI1", "TP53"):
        assert gene in BUILTIN_GENE_SETS["tf"]
    for gene in ("CCNB1", "CDK1", "MKI67", "TOP2A", "PCNA", "MCM2", "E2F1"):
        assert gene in BUILTIN_GENE_SETS["cell_cycle"]
    for gene in ("HK2", "PFKP", "GAPDH", "PKM", "LDHA", "CS", "IDH2", "SDHA"):
        assert gene in BUILTIN_GENE_SETS["metabolic"]
    for gene in ("POU5F1", "NANOG", "SOX2", "LIN28A", "DPPA4", "TDGF1", "ZFP42"):
        assert gene in BUILTIN_GENE_SETS["pluripotency"]


def test_builtin_tfs_are_in_lambert_census(genesets_dir):
    census = set(read_list(genesets_dir / "human_tfs_lambert2018.txt"))
    assert len(census) == 1639
    assert set(BUILTIN_GENE_SETS["tf"]) <= census


def test_read_list_skips_comments_blanks_and_duplicates(tmp_path):
    path = tmp_path / "genes.txt"
    path.write_text("# source: me\n\nSOX2\n  GATA1  \n# KLF1\nSOX2\nMYC\textra column\n")
    assert read_list(path) == ["SOX2", "GATA1", "MYC"]


def test_read_gmt_handles_trailing_tabs_and_repeated_terms(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("A\tdesc\tHK2\tPKM\t\t\nB\thttp://x\tCS\nA\tdesc\tLDHA\tHK2\n\n")
    assert read_gmt(path) == {"A": ["HK2", "PKM", "LDHA"], "B": ["CS"]}
    bad = tmp_path / "bad.gmt"
    bad.write_text("no tabs here\n")
    with pytest.raises(ValueError, match="line 1 is not GMT"):
        read_gmt(bad)


def test_read_real_gmt_and_lists(genesets_dir):
    hallmark = read_gmt(genesets_dir / "msigdb_hallmark_v7.0.gmt")
    assert len(hallmark) == 50
    assert len(hallmark["HALLMARK_GLYCOLYSIS"]) == 200
    s_phase = read_list(genesets_dir / "cell_cycle_tirosh2016_s.txt")
    assert len(s_phase) == 43 and "MLF1IP" in s_phase


def test_load_gene_sets_sources(tmp_path, genesets_dir):
    txt = tmp_path / "tf.txt"
    txt.write_text("SOX2\nGATA1\n")
    gmt = tmp_path / "m.gmt"
    gmt.write_text("GLY\t-\tHK2\tPKM\nTCA\t-\tCS\tPKM\n")
    sets = load_gene_sets(
        {
            "tf": str(txt),
            "metabolic": gmt,
            "cell_cycle": [f"{gmt}::TCA", "CDK1", txt],
            "pluripotency": {"core": ["POU5F1", "NANOG"], "extra": ["NANOG", "LIN28A"]},
        }
    )
    assert sets["tf"] == ("SOX2", "GATA1")
    assert sets["metabolic"] == ("HK2", "PKM", "CS")
    assert sets["cell_cycle"] == ("CS", "PKM", "CDK1", "SOX2", "GATA1")
    assert sets["pluripotency"] == ("POU5F1", "NANOG", "LIN28A")
    # Categories not given keep their built-in list; symbols with '/' stay symbols.
    assert load_gene_sets({"tf": ["OCT3/4"]})["cell_cycle"] == BUILTIN_GENE_SETS["cell_cycle"]
    assert load_gene_sets({"tf": ["OCT3/4"]})["tf"] == ("OCT3/4",)
    assert load_gene_sets(None) == BUILTIN_GENE_SETS
    one_term = load_gene_sets(
        {"metabolic": f"{genesets_dir / 'msigdb_hallmark_v7.0.gmt'}::HALLMARK_GLYCOLYSIS"}
    )
    assert len(one_term["metabolic"]) == 200


def test_load_gene_sets_errors(tmp_path):
    missing = tmp_path / "nope" / "tfs.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_gene_sets({"tf": missing})
    with pytest.raises(FileNotFoundError, match="nope"):
        load_gene_sets({"tf": ["SOX2", str(missing)]})
    with pytest.raises(ValueError, match=r"unknown gene-set categories \['tfs'\]"):
        load_gene_sets({"tfs": ["SOX2"]})
    gmt = tmp_path / "m.gmt"
    gmt.write_text("GLYCOLYSIS\t-\tHK2\n")
    with pytest.raises(ValueError, match=r"term 'GLYCO' not found.*GLYCOLYSIS"):
        load_gene_sets({"metabolic": f"{gmt}::GLYCO"})
    with pytest.raises(TypeError, match="gene set 'tf'"):
        load_gene_sets({"tf": 3})
    with pytest.raises(TypeError, match="must be a dict"):
        load_gene_sets(["SOX2"])
    assert load_gene_sets({"anything": ["A"]}, categories=None)["anything"] == ("A",)


def test_resolve_aliases():
    assert resolve_aliases(["OCT4", "OCT3/4", "SOX2", "MLF1IP", "FAM64A", "HN1", "T"]) == [
        "POU5F1",
        "POU5F1",
        "SOX2",
        "CENPU",
        "PIMREG",
        "JPT1",
        "TBXT",
    ]
    assert resolve_aliases(["KIAA1804"]) == ["MAP3K21"]
    # With var_names: the spelling the data use wins, whichever direction.
    var = ["MLF1IP", "POU5F1", "MAP3K21", "GAPDH"]
    assert resolve_aliases(["CENPU", "OCT4", "KIAA1804", "GAPDH", "FAM64A"], var) == [
        "MLF1IP",
        "POU5F1",
        "MAP3K21",
        "GAPDH",
        "PIMREG",
    ]


def test_resolve_shared_cell_cycle_list_to_current_symbols(genesets_dir):
    g2m = read_list(genesets_dir / "cell_cycle_tirosh2016_g2m.txt")
    resolved = resolve_aliases(g2m)
    assert {"PIMREG", "JPT1"} <= set(resolved)
    assert not {"FAM64A", "HN1"} & set(resolved)
    assert len(resolved) == len(g2m) == 54


# ---------------------------------------------------------------- the gene_sets grammar
@pytest.fixture
def files(tmp_path):
    gmt = tmp_path / "m.gmt"
    gmt.write_text("GLY\t-\tHK2\tPKM\tHK2\nTCA\t-\tCS\tPKM\n")
    txt = tmp_path / "tf.txt"
    txt.write_text("SOX2\nGATA1\nSOX2\n")
    tsv = tmp_path / "panel.tsv"
    tsv.write_text("# gene\tscore\nMYC\t1.0\nKLF1\t0.5\n")
    return {"gmt": gmt, "txt": txt, "tsv": tsv}


def test_grammar_none_false_and_paths(files):
    gmt, txt, tsv = files["gmt"], files["txt"], files["tsv"]
    assert read_gene_sets(None) == {k: list(v) for k, v in BUILTIN_GENE_SETS.items()}
    assert read_gene_sets(False) == {}
    # a GMT path: every term in file order, genes de-duplicated
    assert read_gene_sets(str(gmt)) == {"GLY": ["HK2", "PKM"], "TCA": ["CS", "PKM"]}
    assert read_gene_sets(gmt) == read_gene_sets(str(gmt))
    assert list(read_gene_sets(gmt)) == ["GLY", "TCA"]
    # one term, named after the term
    assert read_gene_sets(f"{gmt}::TCA") == {"TCA": ["CS", "PKM"]}
    # other files: one list named after the file
    assert read_gene_sets(txt) == {"tf": ["SOX2", "GATA1"]}
    assert read_gene_sets(str(tsv)) == {"panel": ["MYC", "KLF1"]}


def test_grammar_lists_merge_in_order(files):
    gmt, txt = files["gmt"], files["txt"]
    sets = read_gene_sets([str(gmt), txt, {"GLY": ["LDHA"]}, f"{gmt}::TCA"])
    # a later set of the same name replaces the earlier one, in its first position
    assert sets == {"GLY": ["LDHA"], "TCA": ["CS", "PKM"], "tf": ["SOX2", "GATA1"]}
    assert list(sets) == ["GLY", "TCA", "tf"]
    assert read_gene_sets([None, False])["tf"] == list(BUILTIN_GENE_SETS["tf"])
    assert read_gene_sets([]) == {}


def test_grammar_dict_sources(files):
    gmt, txt = files["gmt"], files["txt"]
    sets = read_gene_sets(
        {
            "symbols": ["X", "Y", "X"],
            "gmt_union": str(gmt),
            "one_term": f"{gmt}::GLY",
            "text": txt,
            "mixed": [f"{gmt}::TCA", "CDK1", txt, "OCT3/4"],
            "union": {"a": ["P", "Q"], "b": ["Q", "R"]},
            "empty": [],
        }
    )
    assert sets == {
        "symbols": ["X", "Y"],
        "gmt_union": ["HK2", "PKM", "CS"],
        "one_term": ["HK2", "PKM"],
        "text": ["SOX2", "GATA1"],
        "mixed": ["CS", "PKM", "CDK1", "SOX2", "GATA1", "OCT3/4"],
        "union": ["P", "Q", "R"],
        "empty": [],
    }
    assert list(sets) == ["symbols", "gmt_union", "one_term", "text", "mixed", "union", "empty"]


def test_grammar_is_the_gene_selector_reader(files, genesets_dir):
    gmt = files["gmt"]
    hallmark = f"{genesets_dir / 'msigdb_hallmark_v7.0.gmt'}::HALLMARK_GLYCOLYSIS"
    spec = {"metabolic": hallmark, "cell_cycle": [f"{gmt}::TCA", "CDK1"], "tf": str(gmt)}
    selector = load_gene_sets(spec)
    for category, genes in read_gene_sets(spec).items():
        assert selector[category] == tuple(genes)
    assert len(read_gene_sets(hallmark)["HALLMARK_GLYCOLYSIS"]) == 200
    assert (
        read_gene_sets(hallmark)["HALLMARK_GLYCOLYSIS"]
        == read_gmt(hallmark.split("::")[0])["HALLMARK_GLYCOLYSIS"]
    )


def test_grammar_errors(files, tmp_path):
    gmt = files["gmt"]
    missing = tmp_path / "nope" / "sets.gmt"
    for spec in (missing, str(missing), [str(missing)], {"a": missing}, {"a": [str(missing)]}):
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
            read_gene_sets(spec)
    with pytest.raises(ValueError, match=r"term 'GL' not found.*Terms containing 'GL': \['GLY'\]"):
        read_gene_sets(f"{gmt}::GL")
    with pytest.raises(ValueError, match="term 'NOPE' not found"):
        read_gene_sets({"x": f"{gmt}::NOPE"})
    with pytest.raises(ValueError, match=r"is not a \.gmt file"):
        read_gene_sets(f"{files['txt']}::TERM")
    with pytest.raises(TypeError, match=r"`gene_sets` must be None, False, a dict, a path"):
        read_gene_sets(3)
    with pytest.raises(TypeError, match=r"`prior_gene_sets` must be None, False"):
        read_gene_sets(True, param="prior_gene_sets")
    with pytest.raises(TypeError, match=r"gene set 'x': expected a path"):
        read_gene_sets({"x": 3})
    with pytest.raises(TypeError, match=r"gene set 'x': items must be gene symbols"):
        read_gene_sets({"x": ["SOX2", 7]})


# ---------------------------------------------------------------- parsed once per process
@pytest.fixture
def parse_counts(monkeypatch):
    """Count calls of the low-level parsers behind read_gmt and read_list."""
    counts = {"gmt": 0, "list": 0}

    def counting(kind, parse):
        def wrapper(path):
            counts[kind] += 1
            return parse(path)

        return wrapper

    monkeypatch.setattr(_io, "_parse_gmt", counting("gmt", _io._parse_gmt))
    monkeypatch.setattr(_io, "_parse_list", counting("list", _io._parse_list))
    return counts


def test_a_file_is_parsed_once(files, parse_counts, monkeypatch):
    gmt, txt = files["gmt"], files["txt"]
    first = read_gene_sets(gmt)
    read_gene_sets([str(gmt), f"{gmt}::GLY"])
    load_gene_sets({"metabolic": gmt, "cell_cycle": [f"{gmt}::TCA"]})
    read_gmt(gmt)
    monkeypatch.chdir(gmt.parent)  # the same file by a relative path
    read_gene_sets(Path("m.gmt"))
    read_list(txt)
    read_gene_sets({"tf": txt})
    assert parse_counts == {"gmt": 1, "list": 1}
    # callers get fresh lists: changing one does not change the next answer
    first["GLY"].append("CHANGED")
    assert read_gene_sets(gmt)["GLY"] == ["HK2", "PKM"]


def test_a_modified_file_is_read_again(files, parse_counts):
    gmt = files["gmt"]
    assert read_gene_sets(gmt)["GLY"] == ["HK2", "PKM"]
    gmt.write_text("GLY\t-\tLDHA\n")  # new size
    assert read_gene_sets(gmt) == {"GLY": ["LDHA"]}
    assert parse_counts["gmt"] == 2
    gmt.write_text("GLY\t-\tENO1\n")  # same size: the modification time tells
    stat = gmt.stat()
    os.utime(gmt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert read_gene_sets(gmt) == {"GLY": ["ENO1"]}
    assert parse_counts["gmt"] == 3


def test_bad_gmt_is_not_cached(tmp_path, parse_counts):
    bad = tmp_path / "bad.gmt"
    bad.write_text("no tabs here\n")
    for _ in range(2):
        with pytest.raises(ValueError, match="line 1 is not GMT"):
            read_gene_sets(bad)
    assert parse_counts["gmt"] == 2
