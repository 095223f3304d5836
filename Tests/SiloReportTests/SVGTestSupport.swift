import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest

/// Every `<svg …>…</svg>` element of an HTML document, in order.
func svgElements(in html: String) -> [String] {
    var result: [String] = []
    var rest = html[...]
    while let open = rest.range(of: "<svg"), let close = rest.range(of: "</svg>", range: open.upperBound..<rest.endIndex) {
        result.append(String(rest[open.lowerBound..<close.upperBound]))
        rest = rest[close.upperBound...]
    }
    return result
}

/// Parses SVG text as XML and collects its elements (name and attributes) in document order.
final class SVGCollector: NSObject, XMLParserDelegate {
    struct Element {
        let name: String
        let attributes: [String: String]
    }

    private(set) var elements: [Element] = []
    private(set) var errorDescription: String?

    /// Parses `svg`; false (with `errorDescription`) when it is not well-formed XML.
    func parse(_ svg: String) -> Bool {
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = self
        let ok = parser.parse()
        if !ok { errorDescription = parser.parserError.map { "\($0)" } ?? "unknown XML error" }
        return ok
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                qualifiedName: String?, attributes: [String: String] = [:]) {
        elements.append(Element(name: elementName, attributes: attributes))
    }

    /// The `d` attributes of the `<path>` elements drawn for series (inside a series group).
    var paths: [String] { elements.filter { $0.name == "path" && $0.attributes["stroke"]?.hasPrefix("#") == true }.compactMap { $0.attributes["d"] } }

    /// The centres of all `<circle>` elements.
    var circles: [(x: String, y: String)] {
        elements.filter { $0.name == "circle" }.map { ($0.attributes["cx"] ?? "", $0.attributes["cy"] ?? "") }
    }
}

/// Parses an SVG string, failing the test when it is not well-formed.
func parseSVG(_ svg: String, file: StaticString = #filePath, line: UInt = #line) -> SVGCollector {
    let collector = SVGCollector()
    XCTAssertTrue(collector.parse(svg), "SVG is not well-formed XML: \(collector.errorDescription ?? "")\n\(svg.prefix(400))", file: file, line: line)
    return collector
}
