"""Model output -> safe HTML for the chat page: Markdown (markdown-it-py), code highlighted (Pygments),
everything passed through an allow-list sanitizer (nh3), calculator calls and their results as blocks of their own.

Model output is untrusted text: raw HTML in it is shown as text (markdown-it's `html` is off), and whatever
Markdown produces is cleaned again by nh3, so no script, event handler, style or javascript: link survives.
Rendering happens here, on the server, so the page never needs a Markdown library or a CDN.
"""
import html

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

# The code classes Pygments emits ("k", "s2", ...) sit under .hl; the page's stylesheet route serves their colours.
_FORMATTER = HtmlFormatter(nowrap=True)
ALLOWED_TAGS = {"p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
                "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "span", "div"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "span": {"class"}, "div": {"class"},
                      "pre": {"class"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}}


def _highlight(code: str, lang: str, _attrs) -> str:
    """Pygments spans for a fenced block with a known language; "" lets markdown-it escape it plainly."""
    try:
        lexer = get_lexer_by_name(lang.strip()) if lang and lang.strip() else None
    except ClassNotFound:
        lexer = None
    return highlight(code, lexer, _FORMATTER) if lexer else ""


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False,
                                      "highlight": _highlight}).enable(["table", "strikethrough"])


def sanitize(fragment: str) -> str:
    """Only the tags and attributes above; links get rel=noopener and open in a new tab; only http(s)/mailto."""
    return nh3.clean(fragment, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
                     set_tag_attribute_values={"a": {"target": "_blank"}},
                     filter_style_properties={"text-align"}, strip_comments=True)


def markdown_html(text: str) -> str:
    """Markdown text -> sanitized HTML (code blocks highlighted)."""
    rendered = _MARKDOWN.render(text).replace('<pre><code class="language-', '<pre class="hl"><code class="language-')
    return sanitize(rendered)


def _tool_block(call: str | None, result: str | None) -> str:
    """A calculator call and its result, shown apart from the prose (labels are filled in by the page)."""
    rows = []
    if call is not None:
        rows.append(f'<div class="tool-call"><span class="tool-tag tool-tag-call"></span>'
                    f'<code>{html.escape(call)}</code></div>')
    if result is not None:
        rows.append(f'<div class="tool-result"><span class="tool-tag tool-tag-result"></span>'
                    f'<code>{html.escape(result)}</code></div>')
    return sanitize(f'<div class="tool">{"".join(rows)}</div>')


def message_html(content) -> str:
    """An assistant message's content (a string, or text / python / python_output parts) -> sanitized HTML.

    Text parts are joined and rendered as Markdown between tool blocks; a call is paired with the result
    that follows it.
    """
    if isinstance(content, str):
        return markdown_html(content)
    out, text, call = [], [], None
    for part in content:
        kind, value = part["type"], part["text"]
        if kind == "text":
            if call is not None:
                out.append(_tool_block(call, None))
                call = None
            text.append(value)
            continue
        if text:
            out.append(markdown_html("".join(text)))
            text = []
        if kind == "python":
            if call is not None:
                out.append(_tool_block(call, None))
            call = value
        else:  # python_output
            out.append(_tool_block(call, value))
            call = None
    if call is not None:
        out.append(_tool_block(call, None))
    if text:
        out.append(markdown_html("".join(text)))
    return "".join(out)


def highlight_css() -> str:
    """The code colours for light and dark themes (Pygments' own styles), scoped under .hl."""
    light = HtmlFormatter(style="default").get_style_defs(".hl")
    dark = HtmlFormatter(style="monokai").get_style_defs('[data-theme="dark"] .hl')
    # only the token rules: the page draws code blocks' backgrounds and borders itself
    keep = [ln for ln in (light + "\n" + dark).splitlines() if ".hl ." in ln and "background" not in ln]
    return "\n".join(keep) + "\n"
