"""Plain-text tables for the command line (no dependencies, aligned columns, '-' for missing values)."""


def print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        return

    def cell(row, col):
        value = row.get(col)
        return "-" if value is None else str(value)

    widths = {c: max(len(c), *(len(cell(r, c)) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(cell(r, c).ljust(widths[c]) for c in columns).rstrip())
