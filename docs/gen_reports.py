"""Build-time pages for `mkdocs build` (the mkdocs-gen-files plugin): one page per published study, made from its
committed report (`results/**/report/report.md` with its figures and tables), and an index of them. Nothing here is
written into the repository: the pages exist only in the built site, so they cannot drift from the reports."""

from __future__ import annotations

import shlex
from pathlib import Path

import mkdocs_gen_files
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def study_command(study: Path) -> str:
    """The command that ran the study, from the overrides Hydra recorded in its multirun.yaml."""
    overrides = yaml.safe_load((study / "multirun.yaml").read_text())["hydra"]["overrides"]
    sweep_dir = [o for o in overrides.get("hydra", []) if o.startswith("hydra.sweep.dir=")]
    return "lstm-odyssey-train -m " + " ".join(shlex.quote(o) for o in [*overrides["task"], *sweep_dir])


def write_page(study: Path) -> str:
    name = study.relative_to(RESULTS).as_posix()
    report = study / "report"
    body = (report / "report.md").read_text().split("\n", 1)[1]  # below the report's own title
    page = (f"# {name}\n\n"
            f"The committed report of `results/{name}/`, as `lstm-odyssey-report results/{name}` writes it from the "
            f"study's records. The study's command (the same command resumes it):\n\n"
            f"```bash\n{study_command(study)}\n```\n{body}")
    with mkdocs_gen_files.open(f"reports/{name}/index.md", "w") as out:
        out.write(page)
    for asset in sorted([*report.glob("figures/*.png"), *report.glob("tables/*.csv")]):
        with mkdocs_gen_files.open(f"reports/{name}/{asset.relative_to(report).as_posix()}", "wb") as out:
            out.write(asset.read_bytes())
    return name


names = [write_page(path.parent.parent) for path in sorted(RESULTS.glob("**/report/report.md"))]
with mkdocs_gen_files.open("reports/index.md", "w") as out:
    out.write("# Reports of the published studies\n\nEach study's committed report, with its figures and tables "
              "([Results](../results/index.md) says what they found):\n\n"
              + "".join(f"- [{name}]({name}/index.md)\n" for name in names))
