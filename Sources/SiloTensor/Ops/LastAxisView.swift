extension Tensor {
    /// A view (…, C) → (…, sizes…) that splits the last axis, e.g. (B, T, C) → (B, T, H, D), without
    /// copying even when the outer axes are strided (slices of a fused projection). Needs a unit
    /// stride on the last axis.
    /// - Throws: ``TensorError`` if the sizes do not multiply to the last dimension.
    public func splittingLastAxis(_ sizes: [Int]) throws -> Tensor {
        guard rank >= 1, sizes.reduce(1, *) == shape[rank - 1], sizes.allSatisfy({ $0 > 0 }) else {
            throw TensorError.shapeMismatch("splittingLastAxis", shape, sizes, detail: "sizes must multiply to the last dimension")
        }
        var source = self
        if rank >= 1 && strides[rank - 1] != 1 && shape[rank - 1] > 1 { source = contiguousCopy() }
        var view = source.detached()
        view.shape = Array(source.shape.dropLast()) + sizes
        view.strides = Array(source.strides.dropLast()) + Tensor.contiguousStrides(sizes)
        let originalShape = shape
        return view.recorded("splittingLastAxis", inputs: [self]) { gradOut, _ in
            var merged = gradOut
            merged.shape = originalShape
            merged.strides = Tensor.contiguousStrides(originalShape)
            return [merged]
        }
    }
}
