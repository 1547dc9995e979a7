# The header of every metaps message (frame 0). Payload frames follow as raw little-endian arrays:
# keys as u64, values as f32. See docs/wire.md.
@0xc4b1f3a2d5e60718;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("metaps::wire");

enum MsgType {
  unknown @0;
  error @1;          # typed error reply: errorCode, errorMessage
  pull @2;           # payload: [keys u64]            -> pullReply: [values f32 (numKeys x dim)]
  pullReply @3;
  push @4;           # payload: [keys u64, grads f32] -> pushAck
  pushAck @5;
  pullDense @6;      # table names a dense tensor       -> pullDenseReply: [values f32]
  pullDenseReply @7;
  pushDense @8;      # payload: [grads f32]             -> pushAck
  checkpoint @9;     # meta: target directory           -> checkpointAck
  checkpointAck @10;
  ping @11;
  pong @12;
  stats @13;         # -> statsReply (meta: JSON)
  statsReply @14;
  shutdown @15;
  shutdownAck @16;
  control @17;       # scheduler protocol; meta: JSON body, kind in `table`
  controlReply @18;
  export @19;        # meta: target directory           -> exportAck
  exportAck @20;
}

struct Header {
  type @0 :MsgType;
  jobId @1 :Text;
  sender @2 :Text;
  requestId @3 :UInt64;
  epoch @4 :UInt64;       # membership epoch the sender acts under
  auth @5 :Data;          # job token or its MAC
  table @6 :Text;         # table or tensor name; control kind for `control`
  numKeys @7 :UInt64;     # declared element counts, validated against payload sizes
  dim @8 :UInt32;
  step @9 :UInt64;        # worker clock / round
  errorCode @10 :UInt16;  # metaps::StatusCode for `error`
  errorMessage @11 :Text;
  meta @12 :Text;         # small JSON or path argument
  workerId @13 :Int32;
}
