"""The one small renderer for prompt templates.

Built-in templates (this folder) render in a plain Jinja environment with
``StrictUndefined``; a user-supplied template folder renders in Jinja's
``SandboxedEnvironment`` so a template cannot reach Python internals. Errors name the
template file, the line and the task.

>>> r = Renderer()
>>> r.render("answer.jinja", titles=["Heat", "Se7en"])
'1. Heat\\n2. Se7en'
>>> r.render("i0_sequential.jinja", history=["Heat"], item_count=1, paraphrase=0)
'The user has interacted with the following items in chronological order: "Heat". Please recommend 1 item the user will like next.'
"""
from __future__ import annotations

from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from recalign.data.util import DataError

BUILTIN = Path(__file__).resolve().parent


def _quoted(titles) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _percent(p: float) -> str:
    return f"{round(p * 100)}%"


class Renderer:
    def __init__(self, user_dir: str | Path | None = None):
        dirs = [str(BUILTIN)]
        cls = jinja2.Environment
        if user_dir is not None:
            user_dir = Path(user_dir)
            if not user_dir.is_dir():
                raise DataError(f"--templates {user_dir}: not a directory")
            dirs.insert(0, str(user_dir))   # user files shadow the built-in ones
            cls = SandboxedEnvironment
        self.env = cls(loader=jinja2.FileSystemLoader(dirs), undefined=jinja2.StrictUndefined,
                       autoescape=False, keep_trailing_newline=False)
        self.env.filters.update(quoted=_quoted, items=_items, percent=_percent)
        self._cache: dict[str, jinja2.Template] = {}

    def template(self, name: str, /, task: str | None = None) -> jinja2.Template:
        t = self._cache.get(name)
        if t is None:
            where = f" (task {task})" if task else ""
            try:
                t = self.env.get_template(name)
            except jinja2.TemplateNotFound:
                raise DataError(f"template {name!r}{where} not found in "
                                f"{', '.join(self.env.loader.searchpath)}") from None
            except jinja2.TemplateSyntaxError as e:
                raise DataError(f"{e.filename or name}:{e.lineno}: template syntax error: {e.message}{where}") from None
            self._cache[name] = t
        return t

    def render(self, name: str, /, task: str | None = None, **variables) -> str:
        """Render ``name`` with ``variables``; empty output is an error (a paraphrase index
        the template does not have)."""
        t = self.template(name, task)
        where = f" for task {task}" if task else ""
        try:
            text = t.render(**variables).strip()
        except jinja2.UndefinedError as e:
            raise DataError(f"{t.filename}: undefined variable{where}: {e.message}; "
                            f"variables given: {', '.join(sorted(variables))}") from None
        except jinja2.exceptions.SecurityError as e:
            raise DataError(f"{t.filename}: unsafe template operation refused{where}: {e}") from None
        except (IndexError, KeyError, TypeError) as e:
            raise DataError(f"{t.filename}: rendering failed{where}: {type(e).__name__}: {e}") from None
        if not text:
            raise DataError(f"{t.filename} rendered empty text{where} with "
                            f"paraphrase={variables.get('paraphrase')}; does the template have that variant?")
        return text
