// SiloPrivacy: see README.md (Architecture).
