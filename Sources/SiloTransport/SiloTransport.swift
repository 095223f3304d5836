// SiloTransport: see README.md (Architecture).
