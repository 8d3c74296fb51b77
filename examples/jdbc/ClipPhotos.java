// Photos searched by text and by example with clip_search, from Java with the PostgreSQL JDBC driver.
//
// Rows are inserted with their image as a bytea parameter (setBytes), CALL clip_backfill embeds them on a
// connection in auto-commit mode (JDBC's default), and searches are ORDER BY embedding <=> ... queries. Vectors
// travel as text: read with getString ("[0.1,0.2,...]"), sent as a PGobject of type "vector".
//
//   java -cp .:/usr/share/java/postgresql.jar ClipPhotos load PHOTO...     insert the files and embed them
//   java -cp .:/usr/share/java/postgresql.jar ClipPhotos text 'a cat' [K]  photos closest to a text
//   java -cp .:/usr/share/java/postgresql.jar ClipPhotos like NAME [K]     photos closest to the photo NAME
//
// The server: CLIP_JDBC_URL, else jdbc:postgresql://localhost:$PGPORT/$PGDATABASE as $PGUSER (the JDBC driver
// speaks TCP only, not libpq's Unix sockets).
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;
import org.postgresql.util.PGobject;

public final class ClipPhotos {
    /** A search result: a photo's name and its cosine distance to the query. */
    public record Match(String name, double distance) {}

    private ClipPhotos() {}

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    /** The JDBC URL of DATABASE on the server that the environment names. */
    public static String url(String database) {
        return env("CLIP_JDBC_URL", "jdbc:postgresql://localhost:" + env("PGPORT", "5432") + "/" + database
                + "?user=" + env("PGUSER", System.getProperty("user.name")));
    }

    public static Connection connect(String database) throws SQLException {
        return DriverManager.getConnection(url(database));
    }

    /** The dimension of the vectors the server's model makes (32 for the test model, 512 for ViT-B-32). */
    public static int embeddingDimension(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT (clip_info()->>'embed_dim')::int")) {
            rs.next();
            return rs.getInt(1);
        }
    }

    /** The extension (CASCADE brings pgvector's vector type), the table and its HNSW index. */
    public static void createSchema(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE EXTENSION IF NOT EXISTS clip_search CASCADE");
            // DDL takes no parameters: the dimension, an int from the server, goes in as a literal.
            st.execute("CREATE TABLE IF NOT EXISTS photos (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, "
                    + "image bytea NOT NULL, embedding vector(" + embeddingDimension(conn) + "))");
            st.execute("CREATE INDEX IF NOT EXISTS photos_embedding_hnsw ON photos "
                    + "USING hnsw (embedding vector_cosine_ops)");
        }
    }

    /** Inserts each file as a bytea parameter, named by its file name; returns how many were new. */
    public static int insertPhotos(Connection conn, List<Path> files) throws Exception {
        int inserted = 0;
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO photos (name, image) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")) {
            for (Path file : files) {
                ps.setString(1, file.getFileName().toString());
                ps.setBytes(2, Files.readAllBytes(file));
                inserted += ps.executeUpdate();
            }
        }
        return inserted;
    }

    /**
     * Embeds every photo whose embedding is NULL. clip_backfill is a procedure that COMMITs after each batch: the
     * connection must be in auto-commit mode (JDBC's default). After setAutoCommit(false), as in a pool or a
     * framework's transaction, the server refuses it (SQLSTATE 2D000). The casts pin the
     * call to the extension's procedure's exact argument types. PROGRESS receives the procedure's NOTICEs, which
     * the driver hands over as warnings.
     */
    public static void backfill(Connection conn, int batchSize, Consumer<String> progress) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement("CALL clip_backfill(?::regclass, ?::text, ?::text, ?)")) {
            ps.setString(1, "photos");
            ps.setString(2, "image");
            ps.setString(3, "embedding");
            ps.setInt(4, batchSize);
            ps.execute();
            for (SQLWarning w = ps.getWarnings(); w != null && progress != null; w = w.getNextWarning()) {
                progress.accept(w.getMessage());
            }
        }
    }

    private static List<Match> matches(PreparedStatement ps) throws SQLException {
        List<Match> result = new ArrayList<>();
        try (ResultSet rs = ps.executeQuery()) {
            while (rs.next()) {
                double distance = rs.getDouble(2);
                result.add(new Match(rs.getString(1), rs.wasNull() ? Double.NaN : distance));
            }
        }
        return result;
    }

    /** Text to image: the K photos closest to QUERY, closest first. */
    public static List<Match> searchText(Connection conn, String query, int k) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT name, embedding <=> clip_embed_text(?) FROM photos "
                        + "ORDER BY embedding <=> clip_embed_text(?) LIMIT ?")) {
            ps.setString(1, query);
            ps.setString(2, query);
            ps.setInt(3, k);
            return matches(ps);
        }
    }

    /** The stored embedding of the photo called NAME. */
    public static float[] embeddingOf(Connection conn, String name) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement("SELECT embedding FROM photos WHERE name = ?")) {
            ps.setString(1, name);
            try (ResultSet rs = ps.executeQuery()) {
                String text = rs.next() ? rs.getString(1) : null;
                if (text == null) throw new IllegalArgumentException("no embedded photo is called " + name);
                return parseVector(text);
            }
        }
    }

    /** Image to image: the K photos closest to the photo called NAME, itself first (distance 0). */
    public static List<Match> similarPhotos(Connection conn, String name, int k) throws SQLException {
        PGobject query = vector(embeddingOf(conn, name));
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT name, embedding <=> ? FROM photos ORDER BY embedding <=> ? LIMIT ?")) {
            ps.setObject(1, query);
            ps.setObject(2, query);
            ps.setInt(3, k);
            return matches(ps);
        }
    }

    /** pgvector's text form "[1,2,3]" to floats. */
    public static float[] parseVector(String text) {
        String[] parts = text.substring(1, text.length() - 1).split(",");
        float[] v = new float[parts.length];
        for (int i = 0; i < parts.length; i++) v[i] = Float.parseFloat(parts[i]);
        return v;
    }

    /** A vector parameter: a PGobject of type "vector" holding pgvector's text form. */
    public static PGobject vector(float[] v) throws SQLException {
        StringBuilder text = new StringBuilder("[");
        for (int i = 0; i < v.length; i++) text.append(i == 0 ? "" : ",").append(v[i]);
        PGobject object = new PGobject();
        object.setType("vector");
        object.setValue(text.append(']').toString());
        return object;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || !List.of("load", "text", "like").contains(args[0])) {
            System.err.println("usage: ClipPhotos load PHOTO... | text QUERY [K] | like NAME [K]");
            System.exit(2);
        }
        try (Connection conn = connect(env("PGDATABASE", "postgres"))) {
            if (args[0].equals("load")) {
                createSchema(conn);
                List<Path> files = new ArrayList<>();
                for (int i = 1; i < args.length; i++) files.add(Path.of(args[i]));
                System.out.println(insertPhotos(conn, files) + " photos inserted");
                backfill(conn, 64, System.out::println);
                return;
            }
            int k = args.length > 2 ? Integer.parseInt(args[2]) : 5;
            List<Match> found = args[0].equals("text") ? searchText(conn, args[1], k) : similarPhotos(conn, args[1], k);
            for (Match m : found) System.out.printf(Locale.ROOT, "%.4f  %s%n", m.distance(), m.name());
        } catch (IllegalArgumentException e) {
            System.err.println(e.getMessage());
            System.exit(1);
        }
    }
}
