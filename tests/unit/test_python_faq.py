"""The Python FAQ loader on pages shaped like Debian's python3.11-doc HTML (Sphinx 5, docutils 0.19)."""

import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from retro_vllm.evaluation.datasets import MIN_DISTRACTOR_WORDS, load_python_faq

FILLER = " ".join(["Distractor words that make this section long enough to keep."] * 3)


def sphinx_page(title: str, body: str, up: str = "../") -> str:
    """The page skeleton the packaged docs use around `div.body`: a mobile menu, the related-links
    bar, the sidebar and the footer, each holding text that must not reach any document."""
    return f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>{title} &#8212; Python 3.11.2 documentation</title>
    <script src="{up}_static/doctools.js"></script>
  </head>
<body>
<div class="mobile-nav">
    <nav class="nav-content" role="navigation">
        <form role="search" class="search" action="{up}search.html" method="get">
            <input type="text" name="q" aria-label="Quick search"/>
        </form>
    </nav>
    <div class="menu-wrapper">
        <nav class="menu" role="navigation" aria-label="main navigation">
  <div>
    <h3><a href="{up}contents.html">Table of Contents</a></h3>
    <ul><li><a class="reference internal" href="#">{title}</a></li></ul>
  </div>
  <div>
    <h4>Previous topic</h4>
    <p class="topless"><a href="windows.html" title="previous chapter">MENU-PREVIOUS-TOPIC</a></p>
  </div>
        </nav>
    </div>
</div>
    <div class="related" role="navigation" aria-label="related navigation">
      <h3>Navigation</h3>
      <ul>
        <li class="right" style="margin-right: 10px"><a href="{up}genindex.html" accesskey="I">RELATED-INDEX</a></li>
        <li><img src="{up}_static/py.svg" alt="python logo"/></li>
        <li class="nav-item nav-item-this"><a href="">{title}</a></li>
      </ul>
    </div>
    <div class="document">
      <div class="documentwrapper">
        <div class="bodywrapper">
          <div class="body" role="main">
{body}
            <div class="clearer"></div>
          </div>
        </div>
      </div>
      <div class="sphinxsidebar" role="navigation" aria-label="main navigation">
        <div class="sphinxsidebarwrapper">
  <div role="note" aria-label="source link">
    <h3>This Page</h3>
    <ul class="this-page-menu"><li><a href="{up}bugs.html">SIDEBAR-REPORT-A-BUG</a></li></ul>
  </div>
        </div>
<div id="sidebarbutton" title="Collapse sidebar"><span>«</span></div>
      </div>
      <div class="clearer"></div>
    </div>
    <div class="footer">
    &copy; <a href="{up}copyright.html">Copyright</a> FOOTER-COPYRIGHT.
    <br />
    Created using <a href="https://www.sphinx-doc.org/">Sphinx</a> 5.3.0.
    </div>
  </body>
</html>
"""


def heading(level: int, anchor: str, text: str, backref: str) -> str:
    return (f'<h{level}><a class="toc-backref" href="#{backref}" role="doc-backlink">{text}</a>'
            f'<a class="headerlink" href="#{anchor}" title="Permalink to this heading">¶</a></h{level}>')


FAQ_BODY = f"""
  <section id="widget-faq">
{heading(1, "widget-faq", "Widget FAQ", "id1")}
<nav class="contents" id="contents">
<p class="topic-title">Contents</p>
<ul class="simple">
<li><p><a class="reference internal" href="#widget-faq" id="id1">Widget FAQ</a></p></li>
<li><p><a class="reference internal" href="#general-questions" id="id2">NAV-CONTENTS-ENTRY</a></p></li>
</ul>
</nav>
<section id="general-questions">
{heading(2, "general-questions", "General Questions", "id2")}
</section>
<section id="how-do-i-spin-a-widget">
{heading(2, "how-do-i-spin-a-widget", "How do I spin a widget?", "id3")}
<p>Call <a class="reference internal" href="../library/widgets.html#widgets.spin"><code class="xref py py-func docutils literal notranslate"><span class="pre">widgets.spin()</span></code></a>
with the number of   turns.</p>
<div class="highlight-python3 notranslate"><div class="highlight"><pre><span></span><span class="gp">&gt;&gt;&gt; </span><span class="n">spin</span><span class="p">(</span><span class="mi">3</span><span class="p">)</span>
<span class="go">done</span>
</pre></div>
</div>
</section>
<section id="sequences-of-widgets">
{heading(2, "sequences-of-widgets", "Sequences of widgets", "id4")}
<section id="why-can-t-i-sort-widgets">
{heading(3, "why-can-t-i-sort-widgets", "Why can’t I sort widgets?", "id5")}
<p>Widgets define no order.</p>
</section>
<section id="what-is-python">
{heading(3, "what-is-python", "What is   Python?", "id6")}
<p>A programming language named after a comedy troupe.</p>
</section>
</section>
</section>
"""

INSTALLED_BODY = """
  <section id="installed-faq">
<h1>Installed FAQ<a class="headerlink" href="#installed-faq" title="Permalink to this heading">¶</a></h1>
<section id="what-is-python">
<h2>What is Python?<a class="headerlink" href="#what-is-python" title="Permalink to this heading">¶</a></h2>
<p>Python is a programming language that came with your computer.</p>
</section>
</section>
"""

REFERENCE_BODY = f"""
  <section id="module-widgets">
<span id="widgets-widget-tools"></span><h1><a class="reference internal" href="#module-widgets"><code class="xref py py-mod docutils literal notranslate"><span class="pre">widgets</span></code></a> — Widget tools<a class="headerlink" href="#module-widgets" title="Permalink to this heading">¶</a></h1>
<p>The widgets module. {FILLER}</p>
<div class="toctree-wrapper compound">
<ul><li class="toctree-l1"><a class="reference internal" href="other.html">TOCTREE-ENTRY</a></li></ul>
</div>
<section id="spinning">
<h2><span class="section-number">1.1. </span>Spinning<a class="headerlink" href="#spinning" title="Permalink to this heading">¶</a></h2>
<dl class="py function">
<dt class="sig sig-object py" id="widgets.spin">
<span class="sig-prename descclassname"><span class="pre">widgets.</span></span><span class="sig-name descname"><span class="pre">spin</span></span><span class="sig-paren">(</span><em class="sig-param"><span class="n"><span class="pre">turns</span></span></em><span class="sig-paren">)</span><a class="headerlink" href="#widgets.spin" title="Permalink to this definition">¶</a></dt>
<dd><p>Spin the widget. {FILLER}</p>
<table class="docutils align-default"><tbody><tr class="row-odd"><td>turns</td><td>how many</td></tr></tbody></table>
</dd></dl>
<section id="spinning-in-detail">
<h3>In detail<a class="headerlink" href="#spinning-in-detail" title="Permalink to this heading">¶</a></h3>
<p>Details. {FILLER}</p>
<section id="edge-cases">
<h4>Edge cases<a class="headerlink" href="#edge-cases" title="Permalink to this heading">¶</a></h4>
<p>Zero turns is allowed.</p>
</section>
</section>
</section>
<section id="tiny">
<h2>Tiny<a class="headerlink" href="#tiny" title="Permalink to this heading">¶</a></h2>
<p>Too short to keep.</p>
</section>
</section>
"""

NOT_CONTENT = "<section id='x'><h1>Listing</h1><p>INDEX-PAGE-TEXT " + FILLER + "</p></section>"


@pytest.fixture
def html(tmp_path: Path) -> Path:
    root = tmp_path / "usr/share/doc/python3.11/html"
    pages = {
        "faq/widgets.html": sphinx_page("Widget FAQ", FAQ_BODY),
        "faq/installed.html": sphinx_page("Installed FAQ", INSTALLED_BODY),
        "faq/index.html": sphinx_page("Python Frequently Asked Questions", NOT_CONTENT),
        "library/widgets.html": sphinx_page("widgets — Widget tools", REFERENCE_BODY),
        "library/index.html": sphinx_page("The Python Standard Library", NOT_CONTENT),
        "genindex-W.html": sphinx_page("Index", NOT_CONTENT, up=""),
        "search.html": sphinx_page("Search", NOT_CONTENT, up=""),
        "_static/copy.html": sphinx_page("Static", NOT_CONTENT, up="../"),
    }
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_questions_become_queries_with_their_answer_sections_as_gold(html):
    dataset = load_python_faq(html)
    assert dataset.name == "python-faq-3.11"
    assert [(q["id"], q["question"], q["gold"]) for q in dataset.queries] == [
        # Asked on two pages, with the whitespace differing: one query, both answers gold.
        ("q-installed-what-is-python", "What is Python?",
         ["faq-installed-what-is-python", "faq-widgets-what-is-python"]),
        ("q-widgets-how-do-i-spin-a-widget", "How do I spin a widget?", ["faq-widgets-how-do-i-spin-a-widget"]),
        ("q-widgets-why-can-t-i-sort-widgets", "Why can’t I sort widgets?", ["faq-widgets-why-can-t-i-sort-widgets"]),
    ]
    answers = {d["id"]: d for d in dataset.documents if d["id"].startswith("faq-")}
    spin = answers["faq-widgets-how-do-i-spin-a-widget"]
    assert spin["text"] == "Call widgets.spin() with the number of turns.\n>>> spin(3)\ndone"
    # The question stays out of its gold document: the title names the page and group instead.
    assert spin["title"] == "Widget FAQ"
    assert answers["faq-widgets-why-can-t-i-sort-widgets"]["title"] == "Widget FAQ › Sequences of widgets"
    assert spin["url"] == "https://docs.python.org/3.11/faq/widgets.html#how-do-i-spin-a-widget"
    assert set(answers) == {g for q in dataset.queries for g in q["gold"]}


def test_reference_pages_split_into_sections_without_navigation(html):
    dataset = load_python_faq(html)
    distractors = {d["id"]: d for d in dataset.documents if not d["id"].startswith("faq-")}
    assert list(distractors) == ["library-widgets-module-widgets", "library-widgets-spinning",
                                 "library-widgets-spinning-in-detail"]
    spinning = distractors["library-widgets-spinning"]
    assert spinning["title"] == "widgets — Widget tools › Spinning"
    assert spinning["text"].startswith("widgets.spin(turns)\nSpin the widget.")
    assert "\nturns how many" in spinning["text"]  # a table row is one line
    # h4 sections stay inside their h3, heading included.
    assert distractors["library-widgets-spinning-in-detail"]["text"].endswith("Edge cases\nZero turns is allowed.")
    assert all(len(d["text"].split()) >= MIN_DISTRACTOR_WORDS for d in distractors.values())
    everything = json.dumps(dataset.documents + dataset.queries, ensure_ascii=False)
    for leaked in ("¶", "Table of Contents", "MENU-PREVIOUS-TOPIC", "RELATED-INDEX", "SIDEBAR-REPORT-A-BUG",
                   "FOOTER-COPYRIGHT", "NAV-CONTENTS-ENTRY", "TOCTREE-ENTRY", "INDEX-PAGE-TEXT", "1.1.",
                   "Quick search"):
        assert leaked not in everything, leaked
    assert all("#" not in d["id"] for d in dataset.documents)


def test_any_folder_above_the_html_finds_the_same_data(html, tmp_path):
    assert load_python_faq(tmp_path).documents == load_python_faq(html).documents


def test_reads_the_deb_itself(html, tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        archive.add(tmp_path / "usr", arcname="./usr")
    deb = tmp_path / "python3.11-doc_test_all.deb"
    members = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", lzma.compress(b"")),
               (b"data.tar.xz", lzma.compress(data.getvalue()))]
    with deb.open("wb") as handle:
        handle.write(b"!<arch>\n")
        for name, content in members:
            handle.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8)
                         + str(len(content)).encode().ljust(10) + b"`\n" + content + b"\n" * (len(content) % 2))
    from_deb = load_python_faq(deb)
    assert from_deb.documents == load_python_faq(html).documents
    assert from_deb.source == deb


def test_metapackage_without_pages_is_explained(tmp_path):
    (tmp_path / "usr/share/doc/python3-doc").mkdir(parents=True)
    with pytest.raises(ValueError, match="python3.X-doc"):
        load_python_faq(tmp_path)


def test_distractor_subsample_is_deterministic_nested_and_keeps_every_gold(html):
    full = load_python_faq(html)
    one, two = load_python_faq(html, max_distractor_docs=1), load_python_faq(html, max_distractor_docs=2)
    gold = {g for q in full.queries for g in q["gold"]}
    distractors = [{d["id"] for d in s.documents} - gold for s in (one, two)]
    assert [len(d) for d in distractors] == [1, 2]
    assert distractors[0] < distractors[1]
    assert distractors[0] == {d["id"] for d in load_python_faq(html, max_distractor_docs=1).documents} - gold
    assert gold <= {d["id"] for d in one.documents}


def test_write_jsonl_writes_corpus_and_queries(html, tmp_path):
    dataset = load_python_faq(html)
    corpus, queries = dataset.write_jsonl(tmp_path / "out")
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    assert rows == dataset.documents
    assert set(rows[0]) == {"id", "text", "title", "url"}
    assert [json.loads(line) for line in queries.read_text(encoding="utf-8").splitlines()] == dataset.queries
    assert dataset.gold_by_query["q-widgets-how-do-i-spin-a-widget"] == ["faq-widgets-how-do-i-spin-a-widget"]
