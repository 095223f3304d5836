// SiloReport: HTML reports with inline SVG charts, terminal tables, progress lines. See README.md (Architecture).
