import XCTest
@testable import SiloReport

final class TextTableTests: XCTestCase {
    private let table = TextTable(headers: ["client", "examples", "loss"],
                                  rows: [["alice", "120", "1.234"], ["bob", "8", "0.98"]])

    func testUnicodeBox() {
        XCTAssertEqual(table.render(), """
        ┌────────┬──────────┬───────┐
        │ client │ examples │  loss │
        ├────────┼──────────┼───────┤
        │ alice  │      120 │ 1.234 │
        │ bob    │        8 │  0.98 │
        └────────┴──────────┴───────┘

        """)
    }

    func testASCIIAndPlain() {
        XCTAssertEqual(table.render(style: .ascii), """
        +--------+----------+-------+
        | client | examples |  loss |
        +--------+----------+-------+
        | alice  |      120 | 1.234 |
        | bob    |        8 |  0.98 |
        +--------+----------+-------+

        """)
        XCTAssertEqual(table.render(style: .plain), """
        client  examples   loss
        ------  --------  -----
        alice        120  1.234
        bob            8   0.98

        """)
    }

    func testWideAndCombiningCharacters() {
        XCTAssertEqual(displayWidth("東京"), 4)
        XCTAssertEqual(displayWidth("e\u{301}"), 1)  // e + combining acute
        XCTAssertEqual(displayWidth("🙂"), 2)
        XCTAssertEqual(displayWidth("abc"), 3)
        let wide = TextTable(headers: ["site", "n"], rows: [["東京", "1"], ["Zu\u{308}rich", "22"]])
        XCTAssertEqual(wide.render(style: .ascii), """
        +--------+----+
        | site   |  n |
        +--------+----+
        | 東京   |  1 |
        | Zu\u{308}rich | 22 |
        +--------+----+

        """)
    }

    func testExplicitAlignmentAndRaggedRows() {
        let ragged = TextTable(headers: ["a", "b"], rows: [["1"], ["22", "x"]], alignments: [.left])
        XCTAssertEqual(ragged.render(style: .plain), """
        a   b
        --  -
        1
        22  x

        """)
    }
}
