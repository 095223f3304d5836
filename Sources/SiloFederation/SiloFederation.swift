// SiloFederation: see README.md (Architecture).
