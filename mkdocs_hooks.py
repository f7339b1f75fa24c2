"""mkdocs hook (mkdocs.yml `hooks:`): the committed plots in results/ become part of the docs site.

The results pages show `results/<name>.png` as `ponder eval search`, `ponder bench --out`, `ponder eval
learning` and `ponder plot results` wrote them; mkdocs serves only files under docs_dir, so this adds every
`results/*.png` to the site's files at `results/<name>.png` instead of keeping a copy under docs/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files


def on_files(files: Files, config: Any) -> Files:
    root = Path(config["config_file_path"]).parent
    for png in sorted((root / "results").glob("*.png")):
        files.append(
            File(
                f"results/{png.name}",
                src_dir=str(root),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
