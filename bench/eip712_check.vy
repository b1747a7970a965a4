# pragma version 0.4.3
# The EIP-712 co-signature check of the Referee on its own (measurement only).
@view
@external
def check(envelope: bytes32, trace_root: bytes32, v: uint8, r: bytes32, s: bytes32) -> address:
    th: bytes32 = keccak256("Receipt(bytes32 envelope,bytes32 traceRoot,uint256 traceSize,bytes32 weightsRoot,uint256 weightsSize,bytes32 opsRoot)")
    sh: bytes32 = keccak256(abi_encode(th, envelope, trace_root, convert(6, uint256), trace_root, convert(8, uint256), trace_root))
    dom: bytes32 = keccak256(abi_encode(keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"), keccak256("edgetrust"), keccak256("1"), chain.id, self))
    return ecrecover(keccak256(concat(b"\x19\x01", dom, sh)), convert(v, uint256), convert(r, uint256), convert(s, uint256))
