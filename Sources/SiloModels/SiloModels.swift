// SiloModels: see README.md (Architecture).
