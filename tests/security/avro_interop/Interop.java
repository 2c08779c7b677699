// Reads Floodlight's Kafka records with Apache Avro's own single-object decoder, and writes them back with
// its encoder: `java -cp <avro classpath> Interop.java DIR NAME...`. For each NAME it reads DIR/NAME.avsc and
// DIR/NAME.bin (a record framed by schemas/codec.py), prints the record as JSON on one line, and writes
// DIR/NAME.java.bin (the same record framed by Java). Any fingerprint it does not know fails the decode.
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

public class Interop {
  public static void main(String[] args) throws Exception {
    Path dir = Path.of(args[0]);
    for (int i = 1; i < args.length; i++) {
      String name = args[i];
      Schema schema = new Schema.Parser().parse(dir.resolve(name + ".avsc").toFile());
      BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(GenericData.get(), schema);
      GenericRecord record = decoder.decode(Files.readAllBytes(dir.resolve(name + ".bin")));
      System.out.println(name + "\t" + record);
      ByteBuffer out = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(record);
      byte[] bytes = new byte[out.remaining()];
      out.get(bytes);
      Files.write(dir.resolve(name + ".java.bin"), bytes);
    }
  }
}
