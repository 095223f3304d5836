// SiloCompression: k-means and the traffic codecs; see README.md (Architecture).
