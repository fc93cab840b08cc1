"""Binary exports (DOCX, ODT, EPUB, PDF): the Pandoc AST of pipeline/pandoc_ast.py rendered by the pandoc
binary that pypandoc-binary ships, and PDF by Typst, each in a subprocess under a concurrency limit."""
