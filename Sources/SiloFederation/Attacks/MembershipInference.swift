import Foundation
import SiloData
import SiloModels
import SiloTensor

/// The loss-threshold membership-inference attack (Yeom et al. 2018): an example on which the trained
/// model's loss is low is guessed to be a training example. Its strength over all thresholds is the
/// ROC AUC of the negated loss as a member score: 0.5 is guessing, 1 is certainty.
public enum MembershipInference {
    /// The ROC AUC of "member" scores −loss: P(a member's loss < a non-member's) + ½ P(equal) (the
    /// Mann–Whitney statistic, as scikit-learn's `roc_auc_score`).
    /// - Precondition: both lists non-empty and finite.
    public static func auc(memberLosses: [Double], nonMemberLosses: [Double]) -> Double {
        precondition(!memberLosses.isEmpty && !nonMemberLosses.isEmpty, "auc: needs members and non-members")
        precondition((memberLosses + nonMemberLosses).allSatisfy(\.isFinite), "auc: losses must be finite")
        // Rank all losses (ascending, ties get their average rank); the members' rank sum gives U.
        let all = memberLosses.map { ($0, true) } + nonMemberLosses.map { ($0, false) }
        let order = all.indices.sorted { all[$0].0 < all[$1].0 }
        var ranks = [Double](repeating: 0, count: all.count)
        var start = 0
        while start < order.count {
            var end = start
            while end + 1 < order.count && all[order[end + 1]].0 == all[order[start]].0 { end += 1 }
            let rank = Double(start + end) / 2 + 1
            for position in start...end { ranks[order[position]] = rank }
            start = end + 1
        }
        let memberCount = Double(memberLosses.count), otherCount = Double(nonMemberLosses.count)
        // Members should have the *lower* losses: count pairs where the non-member's loss is higher.
        let otherRankSum = zip(all, ranks).filter { !$0.0.1 }.reduce(0.0) { $0 + $1.1 }
        let u = otherRankSum - otherCount * (otherCount + 1) / 2
        return u / (memberCount * otherCount)
    }

    /// Each example's mean next-token loss over its labelled positions under `model`, in batches.
    public static func losses(of examples: [EncodedExample], model: any LogProbabilityModel, batchSize: Int = 8) throws -> [Double] {
        var result: [Double] = []
        var start = 0
        while start < examples.count {
            let chunk = Array(examples[start..<min(start + batchSize, examples.count)])
            let time = chunk.map(\.ids.count).max() ?? 1
            var ids: [Int32] = [], positions: [Int32] = [], targets: [Int32] = [], owners: [Int] = []
            for (row, example) in chunk.enumerated() {
                ids += example.ids + Array(repeating: 0, count: time - example.ids.count)
                for (index, label) in example.labels.enumerated() where label != EncodedExample.ignoredLabel {
                    positions.append(Int32(row * time + index))
                    targets.append(label)
                    owners.append(row)
                }
            }
            let logProbabilities = try model.logProbabilities(ids: ids, batch: chunk.count, time: time, at: positions)
            let vocabulary = logProbabilities.shape[1]
            let values = logProbabilities.toArray()
            var sums = [Double](repeating: 0, count: chunk.count), counts = [Double](repeating: 0, count: chunk.count)
            for (index, target) in targets.enumerated() {
                sums[owners[index]] -= Double(values[index * vocabulary + Int(target)])
                counts[owners[index]] += 1
            }
            for row in 0..<chunk.count {
                guard counts[row] > 0 else {
                    throw DataError(.invalidArgument, "the example has no labelled token to score", at: chunk[row].source)
                }
                result.append(sums[row] / counts[row])
            }
            start += batchSize
        }
        return result
    }
}
