// SiloData: see README.md (Architecture).
