"""Reading runs back: eigenspectrum figures and reports, the JupyterLab dashboard, the study's tables."""
