import Foundation
import SiloModels
import SiloTensor

/// The baseline split learning is measured against: the whole model in one process, the same adapters
/// on every stage, one optimizer, the same batches. With one client (or client-batching and SGD) split
/// training reproduces it step for step.
public final class CentralizedTrainer {
    public let part: ModelPart
    public let optimizer: (any Optimizer)?

    /// - Parameter model: a model instance holding every stage.
    public init(model: any LanguageModel, adapters: AdapterSpecification, key: RandomKey,
                optimizer makeOptimizer: ([Tensor]) throws -> any Optimizer) throws {
        let missing = Set(model.stages).subtracting(model.loadedStages)
        guard missing.isEmpty else {
            throw ModelError(.stageNotLoaded, "centralized training needs every stage; missing \(missing.sorted().map(\.description))")
        }
        part = try ModelPart(model: model, adapters: adapters, key: key)
        let trainables = part.trainableTensors
        optimizer = trainables.isEmpty ? nil : try makeOptimizer(trainables)
    }

    /// One step: mean loss over the batch's loss tokens, backward, optimizer step. Returns the loss.
    /// - Throws: ``ProtocolError`` if the batch has no labelled position or the loss is not finite.
    @discardableResult
    public func step(_ batch: TrainingBatch) throws -> Double {
        part.setTraining(true)
        let layers = part.model.layerCount
        let hidden = try part.embedAndRun(ids: batch.ids, batch: batch.batch, time: batch.time, blocks: 0..<0)
        let (loss, _) = try part.loss(hidden: hidden, labels: batch.labels, blocks: 0..<layers)
        let value = Double(loss.toArray()[0])
        guard value.isFinite else { throw ProtocolError("centralized training: loss is \(value)") }
        try loss.backward()
        try optimizer?.step()
        optimizer?.zeroGrad()
        return value
    }
}
