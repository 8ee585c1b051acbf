"""The text of a document file, for every trainer that reads documents (nlp-text's document
classification, NDB): pdf with pypdf, docx with python-docx, html with selectolax (scripts,
styles, templates and noscript dropped), anything else as UTF-8 text. Every input is untrusted:
sizes and page counts are capped, and a parser may raise anything (the caller skips the file).
"""

from __future__ import annotations

import io

#: Largest document read (a plain file or a zip member).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_PDF_PAGES = 2000
#: The suffixes `extract_text` reads as documents (besides plain text).
DOCUMENT_TYPES = (".txt", ".text", ".md", ".markdown", ".pdf", ".docx", ".html", ".htm")
_HIDDEN_HTML = ("script", "style", "template", "noscript", "head")


def extract_text(raw: bytes, suffix: str) -> str:
    """The text of a document of that type (suffix with its dot, lower case)."""
    if suffix == ".pdf":
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(raw))
        pages = reader.pages
        if len(pages) > MAX_PDF_PAGES:
            raise ValueError(f"more than {MAX_PDF_PAGES} pages")
        return "\n".join(page.extract_text() or "" for page in pages)
    if suffix == ".docx":
        import docx

        document = docx.Document(io.BytesIO(raw))
        parts = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                parts.append(" ".join(cell.text for cell in row.cells))
        return "\n".join(parts)
    decoded = raw.decode("utf-8", errors="replace")
    if suffix in (".html", ".htm"):
        return html_text(decoded)
    return decoded


def html_text(markup: str) -> str:
    """The visible text of an HTML document, whitespace collapsed."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(markup)
    title = tree.css_first("title")
    title_text = title.text(deep=True).strip() if title is not None else ""
    for tag in _HIDDEN_HTML:
        for node in tree.css(tag):
            node.decompose()
    root = tree.body if tree.body is not None else tree.root
    text = root.text(deep=True, separator=" ") if root is not None else ""
    body = " ".join(text.split())
    return f"{title_text}\n{body}" if title_text and title_text not in body else body
