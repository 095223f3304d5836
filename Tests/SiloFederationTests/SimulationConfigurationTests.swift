import XCTest
@testable import SiloFederation

final class SimulationConfigurationTests: XCTestCase {
    func decode(_ json: String) throws -> SimulationConfiguration {
        try JSONDecoder().decode(SimulationConfiguration.self, from: Data(json.utf8))
    }

    func testEmptyConfigIsTheEmbeddedDefault() throws {
        let configuration = try decode("{}")
        XCTAssertEqual(configuration, SimulationConfiguration())
        XCTAssertEqual(configuration.model, "smollm2-135m")
        XCTAssertEqual(configuration.task, "boolq")
        XCTAssertEqual(configuration.clients, 4)
        XCTAssertEqual(configuration.split.mode, .clientBatching)
        XCTAssertEqual(configuration.adapters.lora?.rank, 8)
        XCTAssertEqual(configuration.adapters.lora?.targetModules, ["q_proj", "v_proj"])
        XCTAssertNoThrow(try configuration.validate())
    }

    func testPartialSectionsKeepTheirOtherDefaults() throws {
        let configuration = try decode(#"{"split": {"mode": "serial", "k": 2}, "adapters": {"lora": null, "prefix": {"length": 4}}, "optimizer": {"learning_rate": 0.01}}"#)
        XCTAssertEqual(configuration.split.mode, .serial)
        XCTAssertEqual(configuration.split.k, 2)
        XCTAssertEqual(configuration.split.j, 1)
        XCTAssertEqual(configuration.split.rounds, SimulationConfiguration().split.rounds)
        XCTAssertEqual(configuration.split.clientAggregation, .gradients)
        XCTAssertEqual(try decode(#"{"split": {"client_aggregation": "parameters"}}"#).split.clientAggregation, .parameters)
        XCTAssertThrowsError(try decode(#"{"split": {"client_aggregation": "weights"}}"#))
        XCTAssertNil(configuration.adapters.lora)
        XCTAssertEqual(configuration.adapters.prefix?.length, 4)
        XCTAssertEqual(configuration.optimizer.learningRate, 0.01)
        XCTAssertEqual(configuration.optimizer.name, "adamw")
    }

    func testUnknownKeysAndBadValuesAreNamed() throws {
        XCTAssertThrowsError(try decode(#"{"split": {"moed": "serial"}}"#)) { error in
            XCTAssertTrue("\(error)".contains("split.moed: unknown key"), "\(error)")
        }
        XCTAssertThrowsError(try decode(#"{"clientz": 3}"#)) { XCTAssertTrue("\($0)".contains("clientz: unknown key"), "\($0)") }
        XCTAssertThrowsError(try decode(#"{"split": {"mode": "parallel"}}"#))
        var configuration = SimulationConfiguration()
        configuration.clients = 0
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".hasPrefix("clients:"), "\($0)") }
        configuration = SimulationConfiguration()
        configuration.task = "squad"
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".contains("task: 'squad'"), "\($0)") }
        configuration = SimulationConfiguration()
        configuration.data.clientFiles = ["a.jsonl"]
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".contains("data.client_files"), "\($0)") }
    }

    func testRoundTripThroughJSON() throws {
        var configuration = SimulationConfiguration()
        configuration.partition.kind = "dirichlet"
        configuration.partition.alpha = 0.1
        configuration.split.mode = .serverHierarchical
        let data = try JSONEncoder().encode(configuration)
        XCTAssertEqual(try JSONDecoder().decode(SimulationConfiguration.self, from: data), configuration)
    }
}
