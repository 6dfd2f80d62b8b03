"""Datasets: LibreOffice help pages and the evaluation sets built from them."""
