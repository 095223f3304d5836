import Foundation

/// Escapes text for HTML and XML: `&`, `<`, `>`, `"` and `'` become entities, and C0 control
/// characters other than tab, line feed and carriage return (which XML forbids) are dropped.
///
/// The result is safe both as element content and inside a double- or single-quoted attribute,
/// in HTML and in inline SVG (which must also be well-formed XML).
public func escapeHTML(_ text: String) -> String {
    var result = ""
    result.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": result += "&amp;"
        case "<": result += "&lt;"
        case ">": result += "&gt;"
        case "\"": result += "&quot;"
        case "'": result += "&#39;"
        case "\t", "\n", "\r": result.unicodeScalars.append(scalar)
        default:
            // XML 1.0 allows no C0 controls but the three above, and no U+FFFE/U+FFFF.
            if scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0xFFFE || scalar.value == 0xFFFF {
                continue
            }
            result.unicodeScalars.append(scalar)
        }
    }
    return result
}
