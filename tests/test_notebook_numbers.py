"""Numbers in a notebook's prose cannot drift from its outputs.

The rule, per notebook in notebooks/: every number written in a markdown cell (the hand-written prose) must be one
the notebook's stored outputs show, so a figure is either rendered from the run that made it
(a code cell that displays Markdown built from the run, `display(Markdown(f"... {run.metrics['miou']:.3f} ..."))`) or
quoted from an output printed above or below it.

What counts as a number in a markdown cell: decimals (0.257), whole numbers (9, 335), counts with thousands
separators (2,675: read as 2675), percentages (45%: the 45 must be shown), ratios (8.5x), and each side of a
step count or range (221/335, 0.75-1.25).

What is not a number of the prose, so it is never checked:
- anything in `inline code`, fenced code blocks, link targets and HTML comments: config names, commands, paths;
- digits inside a name: glued to a letter or underscore (ResNet34, R34, cpu-35min, F1, 2D), sizes (256x256,
  128 x 128), versions (3.15.1) and exponents (1e-4);
- single-digit whole numbers (2 cores, 1/8 resolution, 4 scales: the prose's structure, not its measurements),
  whole numbers written with a leading zero (notebook numbers 01 ... 06) and years 1900-2099 (citations);
- the number of a numbered list item or heading ("1. Train", "## 2. Results").

A number is shown when some number in the outputs (stream text, text/plain, text/markdown, text/html; commas
dropped, scientific notation read) equals it after rounding to the prose's decimals: 0.257 is covered by an
output of 0.2571 but not by 0.2576. So `pytest tests/test_notebook_numbers.py` names, per markdown cell, each
number that no output backs.
"""

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
OUTPUT_FORMATS = ("text/plain", "text/markdown", "text/html")

NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|<!--.*?-->|\]\([^)]*\)|https?://\S+|\d+ ?[x×] ?\d+", re.DOTALL)
ITEM_NUMBER = re.compile(r"^(\s*(?:#+\s*)?)\d+(?:\.\d+)*[.)](?=\s)", re.MULTILINE)
RATIO = re.compile(r"(\d)[x×](?![\w])")  # 8.5x faster: a figure (256x256 stays a name)
PROSE_NUMBER = re.compile(r"(?<![\w.,])(?<!e-)(?<!e\+)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:%)?(?![\w]|[.,]\d)")
OUTPUT_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def prose_numbers(markdown: str) -> list[str]:
    """The numbers a markdown cell states, as written (thousands separators dropped), by the rule above."""
    text = ITEM_NUMBER.sub(r"\1", NOT_PROSE.sub(" ", markdown))
    text = RATIO.sub(r"\1 x", text)
    found = []
    for match in PROSE_NUMBER.finditer(text):
        whole, fraction = match.group(1).replace(",", ""), match.group(2) or ""
        if not fraction and "," not in match.group(1) and (
                len(whole) == 1 or whole.startswith("0") or 1900 <= int(whole) <= 2099):
            continue  # single digits, notebook numbers (02) and years
        found.append(whole + fraction)
    return found


def output_numbers(notebook) -> set[Decimal]:
    """Every number the notebook's stored outputs show."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.extend(_joined(output.get("data", {}).get(kind, "")) for kind in OUTPUT_FORMATS)
    values = set()
    for token in OUTPUT_NUMBER.findall("\n".join(texts)):
        try:
            values.add(Decimal(token.replace(",", "")))
        except InvalidOperation:
            continue
    return values


def _joined(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def shown(number: str, outputs: set[Decimal]) -> bool:
    """Whether some output number, rounded to the decimals `number` is written with, equals it."""
    target = Decimal(number)
    step = Decimal(1).scaleb(target.as_tuple().exponent)
    return any(_rounded(value, step) == target for value in outputs)


def _rounded(value: Decimal, step: Decimal) -> Decimal | None:
    """`value` rounded to `step`; None for a value too large to be a figure of the prose (a hash, a stamp)."""
    try:
        return value.quantize(step, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return None


def unbacked_numbers(notebook) -> dict[int, list[str]]:
    """{markdown cell index: the numbers it states that no output shows}."""
    outputs = output_numbers(notebook)
    missing = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            numbers = list(dict.fromkeys(n for n in prose_numbers(cell.source) if not shown(n, outputs)))
            if numbers:
                missing[index] = numbers
    return missing


def test_the_rule_on_hand_worked_prose():
    prose = ("## 12. Results\n10. U-Net-R34 reached 0.257 mIoU on 2,675 images at 256x256 (`unet-r34_cityscapes-pairs_"
             "128x128_cpu-35min`) in notebook 02 on 2 cores, 45% of pixels, 8.5x the FLOPs, step 221/335, zoom "
             "0.75-1.25, 128 x 128 crops, lr 1e-4, Keras 3.15.1, Poudel et al. 2019, [docs](docs/x_12.md), 12 each.")
    assert prose_numbers(prose) == ["0.257", "2675", "45", "8.5", "221", "335", "0.75", "1.25", "12"]


def test_a_number_is_shown_when_an_output_rounds_to_it():
    outputs = {Decimal("0.2571"), Decimal("2675"), Decimal("0E+0")}
    assert shown("0.257", outputs) and shown("2675", outputs) and shown("0.0000", outputs)
    assert not shown("0.258", outputs) and not shown("0.26", {Decimal("0.2549")}) and not shown("12", {Decimal("9")})


def test_drift_is_caught_in_a_notebook_made_by_hand():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("U-Net reaches 0.257 mIoU; 12 classes each, 335/335 steps."),
        nbformat.v4.new_code_cell("print(metrics)", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="miou 0.2576\nclasses at zero: 9\nsteps 221/335\n")]),
    ])
    assert unbacked_numbers(notebook) == {0: ["0.257", "12"]}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_number_in_a_notebooks_prose_is_one_its_outputs_show(path):
    missing = unbacked_numbers(nbformat.read(path, as_version=4))
    assert missing == {}, (f"{path.name}: markdown cells state numbers no output shows (render them from the run "
                           f"with display(Markdown(...)), or quote an output): {missing}")


README = NOTEBOOKS[0].parents[1] / "README.md"
RESULTS_FROM = ("04_compare", "05_camvid")  # the notebooks whose stored runs the README's results quote


BENCHMARKS_PAGE = README.parent / "docs" / "benchmarks.md"
BEST_RECIPE = "## The CPU recipe on both cores"  # the README section quoting docs/benchmarks.md's measured runs


def readme_section(text: str, heading: str) -> str:
    """A section of the README: from its `heading` line to the next '## ' heading."""
    start = text.index("\n" + heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_every_number_in_the_readmes_results_is_one_the_notebooks_runs_show():
    """The README quotes notebook 04's comparison and 05's transfer; a figure neither shows has drifted."""
    outputs = set().union(*(output_numbers(nbformat.read(path, as_version=4))
                            for path in NOTEBOOKS if path.stem in RESULTS_FROM))
    results = readme_section(README.read_text(), "## Results")
    missing = [n for n in dict.fromkeys(prose_numbers(results)) if not shown(n, outputs)]
    assert missing == [], f"README.md's results state numbers notebooks {', '.join(RESULTS_FROM)} do not show: {missing}"


def test_every_number_the_readme_quotes_of_the_cpu_recipe_is_on_the_benchmarks_page():
    """The two-core recipe's figures come from runs docs/benchmarks.md records; the README may not drift from it."""
    page = set(prose_numbers(BENCHMARKS_PAGE.read_text()))
    quoted = prose_numbers(readme_section(README.read_text(), BEST_RECIPE))
    missing = [n for n in dict.fromkeys(quoted) if n not in page]
    assert quoted and missing == [], f"README.md's {BEST_RECIPE!r} states numbers docs/benchmarks.md does not: {missing}"
