import Foundation

/// One turn of a conversation.
public struct ChatMessage: Sendable, Equatable, Hashable, Codable {
    /// `system`, `user` or `assistant`.
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: "system", content: content) }
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: "user", content: content) }
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: "assistant", content: content) }
}

/// The chat formats Silo renders without a Jinja engine, recognised from a tokenizer's template.
enum ChatFormat: Equatable, Sendable {
    /// ChatML (SmolLM2-Instruct, Qwen2): `<|im_start|>role\ncontent<|im_end|>\n` per message, then
    /// `<|im_start|>assistant\n` for a generation prompt. `defaultSystemPrompt`: the system turn the
    /// template inserts when the first message is not a system message.
    case chatML(defaultSystemPrompt: String?)

    /// The format of a Jinja chat template, or nil if it is not one Silo knows.
    ///
    /// A ChatML template writes `'<|im_start|>' + message['role'] + '\n' + message['content'] +
    /// '<|im_end|>' + '\n'` for each message and `'<|im_start|>assistant\n'` under
    /// `add_generation_prompt`; SmolLM2's and Qwen2's also start with a fixed system turn when
    /// `messages[0]['role'] != 'system'`, whose text is read out of the template.
    static func recognise(_ template: String) -> ChatFormat? {
        let compact = template.filter { !$0.isWhitespace }
        let perMessage = [
            "'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>'+'\\n'",
            "'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>'+'\n'",
        ].map { $0.filter { !$0.isWhitespace } }
        guard perMessage.contains(where: compact.contains),
              compact.contains("{%ifadd_generation_prompt%}") else { return nil }
        guard template.contains("messages[0]['role'] != 'system'") else { return .chatML(defaultSystemPrompt: nil) }
        for opening in ["'<|im_start|>system\n", "'<|im_start|>system\\n"] {
            guard let start = template.range(of: opening),
                  let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex) else { continue }
            return .chatML(defaultSystemPrompt: String(template[start.upperBound..<end.lowerBound]))
        }
        return nil
    }

    func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        switch self {
        case .chatML(let defaultSystemPrompt):
            var text = ""
            if let defaultSystemPrompt, let first = messages.first, first.role != "system" {
                text += "<|im_start|>system\n\(defaultSystemPrompt)<|im_end|>\n"
            }
            for message in messages {
                text += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n"
            }
            if addGenerationPrompt { text += "<|im_start|>assistant\n" }
            return text
        }
    }
}

extension Tokenizer {
    /// The conversation as the tokenizer's chat template writes it (Hugging Face's
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`).
    ///
    /// Silo renders ChatML templates (SmolLM2-Instruct, Qwen2) natively, including a default system
    /// turn the template inserts when the conversation has none; it does not run arbitrary Jinja.
    /// - Parameter addGenerationPrompt: end with the opening of an assistant turn, for generation.
    /// - Throws: ``ModelError`` `.unsupportedTokenizer` when the tokenizer has no chat template or
    ///   one Silo does not recognise.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool = false) throws -> String {
        guard let chatTemplate else {
            throw ModelError(.unsupportedTokenizer, "this tokenizer has no chat template (tokenizer_config.json `chat_template`, chat_template.jinja or GGUF `tokenizer.chat_template`)")
        }
        guard let format = ChatFormat.recognise(chatTemplate) else {
            throw ModelError(.unsupportedTokenizer, "chat template not recognised (Silo renders ChatML templates only); it begins: \(chatTemplate.prefix(120))")
        }
        return format.render(messages, addGenerationPrompt: addGenerationPrompt)
    }

    /// The ids of the conversation as the chat template writes it; like Hugging Face's
    /// `apply_chat_template(tokenize=True)`, no BOS/EOS is added beyond what the template writes.
    /// - Throws: as ``applyChatTemplate(_:addGenerationPrompt:)``.
    public func encodeChat(_ messages: [ChatMessage], addGenerationPrompt: Bool = false) throws -> [Int] {
        encode(try applyChatTemplate(messages, addGenerationPrompt: addGenerationPrompt), addSpecialTokens: false)
    }
}
