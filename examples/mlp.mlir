// A two-layer MLP: y = softmax(tanh(x @ w1 + b1) @ w2 + b2). Weights are constants (they become ByRE weights).
func.func @main(%x: tensor<4x16xf32>) -> tensor<4x8xf32> {
  %w1 = stablehlo.iota dim = 0 : tensor<16x32xf32>
  %s = stablehlo.constant dense<0.01> : tensor<16x32xf32>
  %w1s = stablehlo.multiply %w1, %s : tensor<16x32xf32>
  %h = stablehlo.dot_general %x, %w1s, contracting_dims = [1] x [0] : (tensor<4x16xf32>, tensor<16x32xf32>) -> tensor<4x32xf32>
  %b1 = stablehlo.constant dense<0.1> : tensor<32xf32>
  %b1b = stablehlo.broadcast_in_dim %b1, dims = [1] : (tensor<32xf32>) -> tensor<4x32xf32>
  %h1 = stablehlo.add %h, %b1b : tensor<4x32xf32>
  %a = stablehlo.tanh %h1 : tensor<4x32xf32>
  %w2 = stablehlo.iota dim = 1 : tensor<32x8xf32>
  %s2 = stablehlo.constant dense<0.05> : tensor<32x8xf32>
  %w2s = stablehlo.multiply %w2, %s2 : tensor<32x8xf32>
  %o = stablehlo.dot_general %a, %w2s, contracting_dims = [1] x [0] : (tensor<4x32xf32>, tensor<32x8xf32>) -> tensor<4x8xf32>
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %mx = stablehlo.reduce(%o init: %ninf) applies stablehlo.maximum across dimensions = [1] : (tensor<4x8xf32>, tensor<f32>) -> tensor<4xf32>
  %mxb = stablehlo.broadcast_in_dim %mx, dims = [0] : (tensor<4xf32>) -> tensor<4x8xf32>
  %d = stablehlo.subtract %o, %mxb : tensor<4x8xf32>
  %e = stablehlo.exponential %d : tensor<4x8xf32>
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %sum = stablehlo.reduce(%e init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<4x8xf32>, tensor<f32>) -> tensor<4xf32>
  %sb = stablehlo.broadcast_in_dim %sum, dims = [0] : (tensor<4xf32>) -> tensor<4x8xf32>
  %y = stablehlo.divide %e, %sb : tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}
