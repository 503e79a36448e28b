"""What the chat page's server-side rendering costs: Markdown (markdown-it-py) + code highlighting (Pygments) +
sanitizing (nh3) of a reply at the largest size a message may have, against plain HTML escaping in the same
sitting for scale. While a reply streams, the page re-renders it at most every 300 ms, so this is also the
share of one core those re-renders take. Prints progress, then one JSON document as the last line.

    python benchmarks/render.py [--runs 30]
"""
import argparse
import html
import json
import statistics
import time

from nanochat.conversations import MAX_MESSAGE_CHARS
from nanochat.web import render

BLOCK = """## Step {i}

Some **bold** and *emphasis*, a [link](https://example.org/{i}) and `inline code`, then a list:

- first item with <b>markup</b> that must stay text
- second item

```python
def area(r):
    return 3.14159 * r * r  # {i}
```

| a | b |
|---|---|
| {i} | {i}0 |

"""


def reply(chars):
    text, i = "", 0
    while len(text) < chars:
        text += BLOCK.format(i=i)
        i += 1
    return text[:chars]


def timed(fn, text, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    render.markdown_html(reply(500))  # warm: lexers load on first use
    results = {}
    for chars in (1_000, MAX_MESSAGE_CHARS):
        text = reply(chars)
        markdown = timed(render.markdown_html, text, args.runs)
        escape = timed(html.escape, text, args.runs)
        results[f"chars_{chars}"] = {"render_ms": round(markdown * 1000, 2), "escape_ms": round(escape * 1000, 4),
                                     "render_over_escape": round(markdown / escape, 1),
                                     "stream_rerender_core_share": round(markdown / 0.3, 3)}
        print(f"{chars:>6} chars: render {markdown * 1000:.2f} ms (escape {escape * 1000:.3f} ms)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
