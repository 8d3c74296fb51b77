// The JDBC example against a real server (scripts/test.sh points PGPORT at the private 'test' cluster: tiny
// model, dimension 32). No test framework: each check runs in order, and the last line says how many passed.
//   javac -cp /usr/share/java/postgresql.jar -d build *.java
//   java -cp build:/usr/share/java/postgresql.jar ClipPhotosTest
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public final class ClipPhotosTest {
    interface Check { void run() throws Exception; }

    static final Path IMAGES = Path.of(System.getProperty("clip.images", "../../tests/fixtures/images"));
    static final List<String> NAMES = List.of("moon_l_512x512.png", "chelsea_rgb_451x300.jpg",
            "rocket_rgb_progressive_640x427.jpg", "coffee_rgb_3x500.png", "astronaut_rgb_posterized_300x250.png",
            "camera_l_320x320.jpg");
    static final String DATABASE = "clip_jdbc";
    static Connection conn;
    static int passed, failed;

    static void check(boolean condition, String what) {
        if (!condition) throw new AssertionError(what);
    }

    static Object scalar(String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getObject(1);
        }
    }

    static void ascending(List<ClipPhotos.Match> found) {
        for (int i = 1; i < found.size(); i++) {
            check(found.get(i - 1).distance() <= found.get(i).distance(), "distances ascend: " + found);
        }
    }

    static void test(String name, Check body) {
        try {
            body.run();
            passed++;
            System.out.println("ok - " + name);
        } catch (Throwable e) {
            failed++;
            System.out.println("FAILED - " + name + ": " + e);
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection admin = ClipPhotos.connect("postgres"); Statement st = admin.createStatement()) {
            st.execute("DROP DATABASE IF EXISTS " + DATABASE + " WITH (FORCE)");
            st.execute("CREATE DATABASE " + DATABASE);
        }
        conn = ClipPhotos.connect(DATABASE);
        ClipPhotos.createSchema(conn);

        test("photos are inserted as bytea into a column of the model's dimension", () -> {
            List<Path> files = new ArrayList<>();
            for (String name : NAMES) files.add(IMAGES.resolve(name));
            check(ClipPhotos.insertPhotos(conn, files) == NAMES.size(), "every photo is new");
            check(("vector(" + ClipPhotos.embeddingDimension(conn) + ")").equals(scalar(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            + "WHERE attrelid = 'photos'::regclass AND attname = 'embedding'")), "the column's type");
            check(((Number) scalar("SELECT count(embedding) FROM photos")).intValue() == 0, "nothing embedded yet");
        });

        test("with auto-commit off, CALL clip_backfill refuses to start (SQLSTATE 2D000)", () -> {
            conn.setAutoCommit(false);
            try {
                ClipPhotos.backfill(conn, 64, null);
                throw new AssertionError("the call succeeded inside a transaction");
            } catch (SQLException e) {
                check(e.getMessage().contains("cannot run inside a transaction block"), e.getMessage());
                check("2D000".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
            } finally {
                conn.rollback();
                conn.setAutoCommit(true);
            }
            check(((Number) scalar("SELECT count(embedding) FROM photos")).intValue() == 0, "nothing embedded");
        });

        test("with auto-commit on, CALL clip_backfill embeds every photo, reporting progress", () -> {
            List<String> notices = new ArrayList<>();
            ClipPhotos.backfill(conn, 4, notices::add);
            String last = "clip_backfill: " + NAMES.size() + " of " + NAMES.size() + " rows embedded";
            check(notices.contains(last), "notices: " + notices);
            check(((Number) scalar("SELECT count(*) FROM photos WHERE embedding = clip_embed_image(image)"))
                    .intValue() == NAMES.size(), "each embedding is clip_embed_image(image)");
        });

        test("text to image", () -> {
            List<ClipPhotos.Match> found = ClipPhotos.searchText(conn, "a photo of the moon", 4);
            check(found.size() == 4, "4 results: " + found);
            for (ClipPhotos.Match m : found) check(NAMES.contains(m.name()), "a known photo: " + m);
            ascending(found);
        });

        test("image to image ranks the photo itself first", () -> {
            for (String name : NAMES) {
                List<ClipPhotos.Match> found = ClipPhotos.similarPhotos(conn, name, NAMES.size());
                check(found.get(0).name().equals(name), name + " first: " + found);
                check(Math.abs(found.get(0).distance()) < 1e-6, "distance to itself: " + found.get(0));
                check(found.size() == NAMES.size(), "every photo: " + found);
                ascending(found);
            }
        });

        test("an unknown name is an error", () -> {
            try {
                ClipPhotos.similarPhotos(conn, "no such photo.png", 3);
                throw new AssertionError("no error");
            } catch (IllegalArgumentException expected) {
                // expected
            }
        });

        test("a vector survives the trip through text", () -> {
            float[] v = ClipPhotos.embeddingOf(conn, NAMES.get(0));
            check(v.length == ClipPhotos.embeddingDimension(conn), "dimension " + v.length);
            try (var ps = conn.prepareStatement("SELECT ? = embedding FROM photos WHERE name = ?")) {
                ps.setObject(1, ClipPhotos.vector(v));
                ps.setString(2, NAMES.get(0));
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next() && rs.getBoolean(1), "the same vector");
                }
            }
        });

        conn.close();
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
