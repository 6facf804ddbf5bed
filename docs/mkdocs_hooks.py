"""MkDocs hooks (mkdocs.yml `hooks:`, a built-in of MkDocs >= 1.4, not a plugin).

1. The repository's README.md is the site's home page (index.md), so the front page a reader sees on the forge and the
   site's first page are one text, and `mkdocs build --strict` checks its links too.
2. A link to a file the site does not hold (a script, bench/, models/, the Dockerfile, a folder under docs/results/
   without a page, a file left out by exclude_docs) is checked on disk: a missing target is a warning, so --strict
   fails on it, as MkDocs fails on a broken link to a page. The link then points into the checkout (or to
   `repo_url`, when mkdocs.yml sets one).

Links are rewritten in the Markdown before MkDocs validates it: a link of the README is made relative to docs/, and an
outside one is parked as `repo:<path>` (a scheme, which MkDocs leaves alone) until the page's HTML is written.
Fenced code blocks are left as they are.
"""
import logging
import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.memory_pixel_interp")   # under "mkdocs": its warnings count for --strict
LINK = re.compile(r"(\]\()(<?)([^)\s>]+)(>?)")                   # the target of a Markdown link or image
FENCE = re.compile(r"^(```|~~~)", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _root(config) -> Path:
    """The repository: the folder of mkdocs.yml (paths are compared unresolved, so a symlinked folder stays inside)."""
    return Path(os.path.abspath(config.config_file_path)).parent


def on_files(files, config):
    files.append(File.generated(config, "index.md", abs_src_path=str(_root(config) / "README.md")))
    return files


def _source_dir(page, config) -> Path:
    """The folder the page's own relative links start from on disk."""
    if page.file.src_uri == "index.md":
        return _root(config)
    return Path(os.path.abspath(config.docs_dir), posixpath.dirname(page.file.src_uri))


def _rewrite(target: str, page, config, files) -> str:
    if SCHEME.match(target) or target.startswith(("#", "/")):
        return target
    path, _, anchor = target.partition("#")
    disk = Path(os.path.normpath(_source_dir(page, config) / path))
    docs, root = Path(os.path.abspath(config.docs_dir)), _root(config)
    if disk == docs or docs in disk.parents:   # inside docs/
        for index in ("README.md", "index.md", "index.html"):   # a folder: its page
            if disk.is_dir() and (disk / index).is_file():
                disk = disk / index
                break
        uri = disk.relative_to(docs).as_posix()
        if files.get_file_from_path(uri) is not None or not disk.exists():   # MkDocs checks it
            page_dir = docs / posixpath.dirname(page.file.src_uri)
            return Path(os.path.relpath(disk, page_dir)).as_posix() + (f"#{anchor}" if anchor else "")
        # on disk but not in the site (a folder without a page, a file left out by exclude_docs): into the checkout
    inside = disk == root or root in disk.parents
    if not inside or not disk.exists():
        log.warning(f"Doc file '{page.file.src_uri}' contains a link '{target}', but {disk} "
                    + ("does not exist" if inside else "is outside the repository"))
        return target
    return "repo:" + disk.relative_to(root).as_posix() + ("/" if disk.is_dir() else "") + (f"#{anchor}" if anchor else "")


def on_page_markdown(markdown, page, config, files):
    parts = FENCE.split(markdown)
    out, inside = [], False
    for part in parts:   # split() keeps the fence markers: text, marker, text, marker, ...
        if part in ("```", "~~~"):
            inside = not inside
            out.append(part)
        elif inside:
            out.append(part)
        else:
            out.append(LINK.sub(lambda m: m.group(1) + m.group(2) + _rewrite(m.group(3), page, config, files) + m.group(4), part))
    return "".join(out)


def on_page_content(html, page, config, files):
    def url(m):
        path = m.group(2)
        if config.repo_url:
            return m.group(1) + config.repo_url.rstrip("/") + "/blob/HEAD/" + path
        here = Path(config.site_dir, posixpath.dirname(page.file.dest_uri))
        rel, _, anchor = path.partition("#")
        return m.group(1) + Path(os.path.relpath(_root(config) / rel, here)).as_posix() + (f"#{anchor}" if anchor else "")
    return re.sub(r'((?:href|src)=")repo:([^"]*)', url, html)
