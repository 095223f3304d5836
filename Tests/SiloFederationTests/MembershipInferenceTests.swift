import XCTest
@testable import SiloFederation

final class MembershipInferenceTests: XCTestCase {
    func testAUCMatchesScikitLearn() {
        // (member losses, non-member losses, roc_auc_score) from Scripts/fixtures/membership_auc.py
        // (scikit-learn 1.7.2; members labelled 1, score = −loss).
        let cases: [([Double], [Double], Double)] = [
            ([1.001, 1.149, 0.863, 0.555, 0.773, 0.504, 1.03, 1.67, 0.754, 0.69, 1.245, 1.178], [1.453, 0.935, 1.385, 1.748, 0.728, 1.171, 0.449, 0.755, 0.479, 1.282, 0.766, 1.536, 1.478, 1.307, 0.142], 0.5777777777777777),
            ([1.5, 2.0, 2.1, 0.5, 1.5, 1.0, 1.2, 3.1, 1.2], [2.0, 2.9, 1.4, 1.9, 2.1, 2.1, 0.8, 2.1, 3.4], 0.7037037037037037),
            ([0.1, 0.2, 0.3], [0.4, 0.5], 1.0),
            ([0.5, 0.5, 0.5], [0.5, 0.5], 0.5),
        ]
        for (members, others, reference) in cases {
            XCTAssertEqual(MembershipInference.auc(memberLosses: members, nonMemberLosses: others), reference, accuracy: 1e-12)
        }
        // Swapping the roles mirrors the AUC.
        XCTAssertEqual(MembershipInference.auc(memberLosses: [0.4, 0.5], nonMemberLosses: [0.1, 0.2, 0.3]), 0)
    }
}
