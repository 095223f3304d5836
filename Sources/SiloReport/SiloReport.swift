// SiloReport: HTML reports with inline SVG charts, terminal tables, progress lines. See README.md (Architecture).
//
// Foundation only. `Report` is a document model rendered by `html()` into one self-contained HTML5
// file (inline CSS and SVG, no JavaScript, no external URLs); `LineChart` and `BarChart` also render
// on their own with `svg()`. `TextTable` draws tables for terminals and `ProgressLine` draws a
// progress bar on standard error (carriage-return redraws on a terminal, coarse plain lines in logs).
